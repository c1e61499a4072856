"""Run every process of a Procfile under supervisord: one that dies is restarted.

    .venv/bin/python ops/scripts/supervise.py [Procfile] [--dir DIR]

`make run` uses it (ops/scripts/run-platform.sh). Each Procfile line
`name: command` becomes a supervisord program that:

- is restarted whenever it exits, so one crash never takes the platform
  down; a process that dies within START_SECONDS of starting counts as a
  failed start, retried after 1, 2, 3... seconds, and given up after
  START_RETRIES of those in a row (supervisord logs "gave up: <name>
  entered FATAL state"; the others keep running);
- writes its output, stdout and stderr, to this terminal, each line
  prefixed with `name | `;
- stops on SIGTERM (stopwaitsecs later, SIGKILL to its process group).

Ctrl-C (or SIGTERM) stops supervisord, which stops every process first.
While it runs, `supervisorctl -c DIR/supervisord.conf status` lists the
processes and `... restart <name>` restarts one. DIR defaults to
$DATA_DIR/supervisor (var/supervisor); the configuration is written there
from the Procfile at every start.
"""

import argparse
import os
import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
START_SECONDS = 10
START_RETRIES = 10
STOP_WAIT_SECONDS = 20
_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")


def read_procfile(path: Path) -> dict[str, str]:
    """`name: command` lines, in order; blank lines and comments skipped."""
    processes = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise ValueError(f"{path}:{number}: not `name: command`: {line!r}")
        name, command = match.groups()
        if name in processes:
            raise ValueError(f"{path}:{number}: {name} is defined twice")
        processes[name] = command
    return processes


def program_command(name: str, command: str) -> str:
    """bash runs the Procfile command (its ${VAR:-default}s) piped through
    a sed that prefixes each line. On stop, the whole process group gets
    SIGTERM: the command stops as it would alone, sed ignores it and prints
    everything up to the command's last line, and bash (whose trap waits for
    the pipeline) exits last, with the command's status."""
    prefix = name.replace("/", r"\/")
    command = command.strip().rstrip(";")
    script = (
        "set -o pipefail; trap : TERM INT; "
        f"{{ {command}; }} 2>&1 | {{ trap '' TERM INT; exec sed -u 's/^/{prefix} | /'; }}"
    )
    # supervisord expands %(...)s in its options: keep a literal %.
    return f"/bin/bash -c {shlex.quote(script)}".replace("%", "%%")


def configuration(processes: dict[str, str], directory: Path) -> str:
    sections = [
        f"""[supervisord]
nodaemon=true
logfile=/dev/null
logfile_maxbytes=0
pidfile={directory / "supervisord.pid"}
childlogdir={directory}

[unix_http_server]
file={directory / "supervisor.sock"}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{directory / "supervisor.sock"}
"""
    ]
    for priority, (name, command) in enumerate(processes.items(), 1):
        sections.append(
            f"""[program:{name}]
command={program_command(name, command)}
directory={ROOT}
priority={priority}
autostart=true
autorestart=true
startsecs={START_SECONDS}
startretries={START_RETRIES}
stopsignal=TERM
stopwaitsecs={STOP_WAIT_SECONDS}
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile=/dev/stdout
stdout_logfile_maxbytes=0
"""
        )
    return "\n".join(sections)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("procfile", nargs="?", type=Path, default=ROOT / "Procfile")
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(os.environ.get("DATA_DIR", ROOT / "var")) / "supervisor",
        help="where the configuration, socket and pid file go",
    )
    args = parser.parse_args(argv)
    try:
        processes = read_procfile(args.procfile)
    except (OSError, ValueError) as exc:
        print(f"supervise: {exc}", file=sys.stderr)
        return 2
    directory = args.dir.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "supervisord.conf"
    conf.write_text(configuration(processes, directory))
    supervisord = Path(sys.executable).parent / "supervisord"
    print(
        f"supervise: {len(processes)} processes from {args.procfile}; "
        f"supervisorctl -c {conf} status",
        flush=True,
    )
    # Replaced by supervisord: Ctrl-C and SIGTERM reach it directly.
    os.execv(supervisord, [str(supervisord), "-c", str(conf)])  # noqa: S606


if __name__ == "__main__":
    sys.exit(main())
