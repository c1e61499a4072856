"""One transfer's (or request's) whole path, from the spans the processes kept locally.

    python -m shared.traces <transfer id | correlation id | trace id> [--dir DIR]

Reads the JSON-lines span files that each process of `make run` writes to
TRACES_DIR (default $DATA_DIR/traces, i.e. var/traces; shared/tracing.py),
finds every trace with a span of that transfer, correlation or trace id,
and prints each trace as a tree: when each span started after the trace's
first, how long it took, which process, what, and whether it failed.
A transfer's trace starts at the gateway's request and goes through
transactions, risk, accounts and the outbox relays to notifications and
analytics. Spans reach the files about a second after they end.
"""

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path


def default_dir() -> Path:
    configured = os.environ.get("TRACES_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("DATA_DIR", "var")) / "traces"


def read_spans(directory: Path) -> list[dict]:
    spans = []
    for path in sorted(directory.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                spans.append(json.loads(line))
            except ValueError:
                continue  # a line being written
    return spans


def traces_of(spans: list[dict], wanted: str) -> dict[str, list[dict]]:
    """Every trace that has a span of this trace, transfer or correlation id."""
    chosen = {
        span["trace_id"]
        for span in spans
        if wanted
        in (
            span["trace_id"],
            span["attributes"].get("transfer_id"),
            span["attributes"].get("correlation_id"),
        )
    }
    found: dict[str, list[dict]] = defaultdict(list)
    for span in spans:
        if span["trace_id"] in chosen:
            found[span["trace_id"]].append(span)
    return dict(found)


def render(trace_id: str, spans: list[dict]) -> list[str]:
    ids = {span["span_id"] for span in spans}
    children: dict[str | None, list[dict]] = defaultdict(list)
    for span in spans:
        parent = span["parent_id"] if span["parent_id"] in ids else None
        children[parent].append(span)
    start = min(span["start_ns"] for span in spans)
    end = max(span["end_ns"] for span in spans)
    lines = [f"trace {trace_id}: {len(spans)} spans, {(end - start) / 1e6:.1f} ms"]

    def walk(parent: str | None, depth: int) -> None:
        for span in sorted(children[parent], key=lambda s: s["start_ns"]):
            offset = (span["start_ns"] - start) / 1e6
            took = (span["end_ns"] - span["start_ns"]) / 1e6
            failed = "  ERROR" if span["status"] == "error" else ""
            lines.append(
                f"{offset:9.1f} ms {took:8.1f} ms  {span['service'] or '?':<14}"
                f"{'  ' * depth}{span['name']} [{span['kind']}]{failed}"
            )
            walk(span["span_id"], depth + 1)

    walk(None, 0)
    return lines


def _first(spans: list[dict]) -> int:
    return min(span["start_ns"] for span in spans)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.traces", description=__doc__)
    parser.add_argument(
        "id", help="a transfer id, a correlation id (X-Correlation-ID) or a trace id"
    )
    parser.add_argument("--dir", type=Path, default=None, help="where the span files are")
    args = parser.parse_args(argv)
    directory = args.dir or default_dir()
    if not directory.is_dir():
        print(
            f"no spans in {directory}: run the platform with TRACES_DIR set (make run sets it)",
            file=sys.stderr,
        )
        return 2
    found = traces_of(read_spans(directory), args.id)
    if not found:
        print(f"no span of {args.id} in {directory} (yet: spans arrive within a second or so)")
        return 1
    for trace_id, spans in sorted(
        found.items(), key=lambda item: min(s["start_ns"] for s in item[1])
    ):
        print("\n".join(render(trace_id, spans)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
