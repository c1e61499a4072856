"""CPU time per process from /proc, grouped by what each process is.

    before = procstat.snapshot(roots=[launcher_pid])
    ...                                   # the load
    cpu = procstat.diff(before, procstat.snapshot(roots=[launcher_pid]))
    for line in procstat.table(cpu, settled=500):
        print(line)

A snapshot is CPU seconds (utime + stime, in clock ticks) per label:

- every descendant of the given root pids (or, with roots=None, every
  process on the machine that is recognisably part of the platform or the
  baseline), labelled from its command line: `nameko run ...
  services.accounts.service:AccountsService` is "accounts", gunicorn's
  master and workers are "gateway" (or "monolith" for the baseline),
  `-m sandboxes.payments` is "payments-sandbox", supervisord and the
  scripts around it are "launcher", anything else under a root "other";
- "rabbitmq": the broker's beam.smp and its helpers;
- "postgres": every process whose comm is "postgres", plus the
  postmaster's cutime + cstime, so that backends which exited between two
  snapshots (a connection closed during the run) are still counted.

Caveat: "rabbitmq" and "postgres" are machine-wide. The broker's other
vhosts and the server's other databases are in their numbers too, so
measure on a quiet machine (and look at the idle rate when in doubt).
"""

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")
SYSTEM_LABELS = ("rabbitmq", "postgres")
# Stand-ins for the outside world and the process supervisor: shown, but not
# part of what the platform itself spends (services, gateway, broker, database).
NOT_THE_PLATFORM = frozenset({"launcher", "payments-sandbox", "notifications-sandbox", "other"})
# Labels whose processes reap their own children: the tree's root also
# carries the CPU of children that exited (postgres backends, gunicorn
# workers restarted, broker helpers).
REAPS_OWN_CHILDREN = frozenset({"postgres", "rabbitmq", "gateway", "monolith"})
LAUNCHER_SCRIPTS = ("supervisord", "supervise.py", "run-platform.sh", "announce.py")


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    comm: str
    state: str  # R, S, D, Z (exited, not yet reaped) ...
    args: tuple[str, ...]
    ticks: int  # utime + stime
    child_ticks: int  # cutime + cstime: children that exited and were waited for
    started: int  # start time in ticks since boot: tells a reused pid apart


def read(pid: int) -> Process | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
        raw_args = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None  # it exited while we looked
    # comm may hold spaces and parentheses: it ends at the last ')'.
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    # A shell's single `-c "nameko run ..."` argument splits into words too.
    args = tuple(" ".join(a.decode(errors="replace") for a in raw_args.split(b"\0")).split())
    return Process(
        pid=pid,
        ppid=int(fields[1]),
        comm=comm,
        state=fields[0],
        args=args,
        ticks=int(fields[11]) + int(fields[12]),
        child_ticks=int(fields[13]) + int(fields[14]),
        started=int(fields[19]),
    )


def processes() -> dict[int, Process]:
    found = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (process := read(int(entry.name))) is not None:
            found[process.pid] = process
    return found


def descendants(table: dict[int, Process], roots: Iterable[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for process in table.values():
        children.setdefault(process.ppid, []).append(process.pid)
    found, todo = set(), [pid for pid in roots if pid in table]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


def classify(process: Process) -> str | None:
    """What a process is, from its command line; None if nothing we know."""
    args = process.args
    names = [os.path.basename(arg) for arg in args]
    if "nameko" in names and "run" in args:
        for arg in args:
            parts = arg.split(":")[0].split(".")
            if len(parts) == 3 and parts[0] == "services" and parts[2] == "service":
                return parts[1]
        return "nameko"
    if "-m" in args:
        module = args[args.index("-m") + 1 : args.index("-m") + 2]
        parts = module[0].split(".") if module else []
        if len(parts) == 2 and parts[0] == "sandboxes":
            return f"{parts[1]}-sandbox"
    if "gunicorn" in names or process.comm.startswith("gunicorn"):
        if any(arg.startswith("gateway.wsgi") for arg in args):
            return "gateway"
        if any(arg.startswith("monolith") for arg in args):
            return "monolith"
        return "gunicorn"
    if "monolith.py" in names:
        return "monolith"  # the baseline's launcher, before it execs gunicorn
    if any(script in names for script in LAUNCHER_SCRIPTS):
        return "launcher"
    return None


def _system_label(process: Process, table: dict[int, Process]) -> str | None:
    if process.comm == "postgres":
        return "postgres"
    pid = process.pid
    while pid in table:  # beam.smp and everything it started
        if table[pid].comm == "beam.smp":
            return "rabbitmq"
        pid = table[pid].ppid
    return None


def labelled(
    roots: Iterable[int] | None = None, system: Iterable[str] = SYSTEM_LABELS
) -> dict[int, tuple[str, Process]]:
    """Each counted process by pid, with its label."""
    table = processes()
    system = set(system)
    ours = descendants(table, roots) if roots is not None else None
    found = {}
    for process in table.values():
        label = _system_label(process, table)
        if label is not None:
            if label not in system:
                continue
        elif ours is None:
            label = classify(process)
            if label is None or label in ("launcher", "other"):
                continue  # machine-wide, only what is surely ours
        elif process.pid in ours:
            label = classify(process) or "other"
        else:
            continue
        found[process.pid] = (label, process)
    return found


def snapshot(
    roots: Iterable[int] | None = None, system: Iterable[str] = SYSTEM_LABELS
) -> dict[str, float]:
    """CPU seconds per label so far. `system`: which of rabbitmq, postgres to include."""
    found = labelled(roots, system)
    ticks: dict[str, int] = {}
    for label, process in found.values():
        parent = found.get(process.ppid)
        is_tree_root = parent is None or parent[0] != label
        own = process.ticks
        if label in REAPS_OWN_CHILDREN and is_tree_root:
            own += process.child_ticks
        ticks[label] = ticks.get(label, 0) + own
    return {label: value / CLOCK_TICKS for label, value in ticks.items()}


def machine_busy() -> dict[str, float]:
    """CPU seconds all cores have been busy since boot (/proc/stat): in processes
    (user, nice, system) and in interrupt handling (irq, softirq: loopback
    network traffic is mostly there, and no process is charged for it)."""
    ticks = [int(value) for value in (PROC / "stat").read_text().split("\n", 1)[0].split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = ticks
    return {
        "processes": (user + nice + system) / CLOCK_TICKS,
        "interrupts": (irq + softirq) / CLOCK_TICKS,
    }


def diff(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds spent per label between two snapshots, largest first."""
    spent = {label: after.get(label, 0.0) - before.get(label, 0.0) for label in after | before}
    return dict(sorted(spent.items(), key=lambda item: -item[1]))


def platform_total(cpu: dict[str, float]) -> float:
    """What the issue counts: services, gateway, broker and database."""
    return sum(seconds for label, seconds in cpu.items() if label not in NOT_THE_PLATFORM)


def table(cpu: dict[str, float], settled: int) -> list[str]:
    """Rows: label, CPU seconds, ms of CPU per settled transfer, share of the total;
    then the total, and the issue's measure when they differ (without NOT_THE_PLATFORM)."""
    spent = sum(cpu.values())
    total = spent or 1e-9  # a share of nothing is 0%, not a division error
    per = max(settled, 1)
    rows = [f"{'process':<22} {'cpu s':>8} {'ms/transfer':>12} {'share':>6}"]
    for label, seconds in cpu.items():
        rows.append(
            f"{label:<22} {seconds:8.2f} {seconds * 1000 / per:12.2f} {seconds / total:6.1%}"
        )
    rows.append(f"{'total':<22} {total:8.2f} {total * 1000 / per:12.2f} {1:6.1%}")
    counted = platform_total(cpu)
    if counted != spent:
        rows.append(
            f"{'platform (issue)':<22} {counted:8.2f} {counted * 1000 / per:12.2f} "
            f"{counted / total:6.1%}"
        )
    return rows
