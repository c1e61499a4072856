"""`make run` keeps the platform up when one process dies (ops/scripts/supervise.py).

supervisord runs a two-line Procfile; one process is killed and comes back
while the other keeps running; Ctrl-C (SIGINT) stops both.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

STEADY = (
    "import os, time; print('pid', os.getpid()); "
    "[print('tick', time.sleep(0.2)) for _ in iter(int, 1)]"
)
CRASHY = "import os, time; print('pid', os.getpid()); time.sleep(600)"
PROCFILE = f"""\
# a comment, then two processes
steady: python -u -c "{STEADY}"
crashy: python -u -c "{CRASHY}"
"""


def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not met within {timeout} s")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_process_that_dies_is_restarted_while_the_others_keep_running(tmp_path):
    (tmp_path / "Procfile").write_text(PROCFILE)
    supervisor = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "ops" / "scripts" / "supervise.py"),
            str(tmp_path / "Procfile"),
            "--dir",
            str(tmp_path / "sv"),
        ],
        cwd=ROOT,
        env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(supervisor.stdout), daemon=True)
    reader.start()

    def pids(name):
        return [int(line.split()[-1]) for line in list(lines) if line.startswith(f"{name} | pid ")]

    try:
        [steady] = wait_for(lambda: pids("steady"), what="steady started")
        [crashy] = wait_for(lambda: pids("crashy"), what="crashy started")
        os.kill(crashy, signal.SIGKILL)  # a crash, as the OOM killer would

        restarted = wait_for(lambda: pids("crashy")[1:], what="crashy restarted")[0]
        assert restarted != crashy and alive(restarted)
        # The other one never stopped: the same process, still ticking.
        ticks = sum(line.startswith("steady | tick") for line in list(lines))
        wait_for(lambda: sum(line.startswith("steady | tick") for line in list(lines)) > ticks)
        assert pids("steady") == [steady] and alive(steady)
        assert any("exited: crashy" in line for line in lines)
    finally:
        supervisor.send_signal(signal.SIGINT)  # Ctrl-C
        supervisor.wait(timeout=30)
    # Ctrl-C stopped every process.
    wait_for(lambda: not alive(steady) and not alive(restarted), timeout=10, what="all stopped")
