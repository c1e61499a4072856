"""Run the chaos suite: `python -m ops.chaos [--short] [--seed N]` (make chaos).

Exits 1 when an invariant broke (the violations are printed, and the
platform's logs kept), 0 otherwise. See docs/CHAOS.md.
"""

# The suite drives the platform from green threads, like the tests it reuses.
import eventlet

eventlet.monkey_patch()

import argparse  # noqa: E402
import sys  # noqa: E402

from ops.chaos.suite import run, table  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.chaos", description=__doc__)
    parser.add_argument("--short", action="store_true", help="a few faults, few customers")
    parser.add_argument("--seed", type=int, default=0, help="seeds the customers' choices")
    args = parser.parse_args(argv)
    report = run(short=args.short, seed=args.seed)
    print(table(report))
    if report.violations:
        print(f"\n{len(report.violations)} violations (logs: {report.logs}):")
        print("\n".join(f"- {violation}" for violation in report.violations))
        return 1
    print("\nevery invariant held")
    return 0


if __name__ == "__main__":
    sys.exit(main())
