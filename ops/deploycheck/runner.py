"""The runner: each check passes, fails with the output that says why, or is skipped.

A check is a function that returns (what later checks need, if anything) when
it passes, raises Failed with its evidence, or raises Skipped when this
machine cannot run it.
"""

import subprocess
import textwrap
import traceback
from pathlib import Path


class Failed(Exception):
    """A check found a problem; the message is printed under its FAIL line."""


class Skipped(Exception):
    """A check cannot run on this machine; the message says why."""


def fail_if(problems: list[str]) -> None:
    """Fail with one line per problem, if there is any."""
    if problems:
        raise Failed("\n".join(problems))


def run(command: list[str | Path], **options) -> str:
    """Run a tool with no stdin; return its standard output, or fail with all it said."""
    result = subprocess.run(
        [str(part) for part in command],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        **options,
    )
    if result.returncode != 0:
        raise Failed(result.stdout + result.stderr)
    return result.stdout


class Report:
    """Prints one line per check, like `PASS  name`, and counts the failures."""

    def __init__(self) -> None:
        self.failures = 0

    def check(self, name: str, check, *args):
        """Run check(*args); return what it returned if it passed, else None."""
        try:
            result = check(*args)
        except Skipped as why:
            print(f"SKIP  {name}: {why}", flush=True)
            return None
        except Failed as failure:
            self._fail(name, str(failure))
            return None
        # A file a check cannot read, or a bug in it, fails that check only.
        except Exception:  # noqa: BLE001
            self._fail(name, traceback.format_exc())
            return None
        print(f"PASS  {name}", flush=True)
        return result

    def check_all(self, checks: list, subject, why_missing: str) -> None:
        """Run each (name, check) on subject; skip them all if there is no subject."""
        for name, check in checks:
            if subject is None:
                print(f"SKIP  {name}: {why_missing}", flush=True)
            else:
                self.check(name, check, subject)

    def _fail(self, name: str, output: str) -> None:
        self.failures += 1
        print(f"FAIL  {name}", flush=True)
        if output.strip():
            print(textwrap.indent(output.rstrip("\n"), "      "), flush=True)
