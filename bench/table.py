"""A markdown table (for the README) of several `bench/throughput.py --json` runs.

    .venv/bin/python bench/table.py batch-server.json single-server.json batch-chdb.json

One column per file, in the order given, headed by its mode and store; a file that is
empty or not a JSON object (a run that failed before printing) gets a column of "failed".
Exit status 1 when a run failed or its checks did not pass, after printing the table.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

Run = dict[str, Any]


def load(path: Path) -> Run | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _num(value: Any, fmt: str, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{fmt}}{unit}"


def _latency(run: Run) -> str:
    p99 = _num(run.get("latency_p99_s"), ".2f", " s")
    if run.get("latency_p99_s") is None:
        return p99
    rate = _num(run.get("live_rate_events_per_s"), ",.0f", " events/s")
    share = _num(run.get("live_to_steady_ratio"), ".2f", "× steady")
    resolution = _num(run.get("latency_resolution_s"), ".2f", " s")
    how = "polled" if run.get("latency_method") == "poll" else "inserted_at"
    return f"≤ {p99} ({how}, resolution {resolution}; at {rate}, {share})"


def _checks(run: Run) -> str:
    mau, events = run.get("mau_ok"), run.get("events_ok")
    if mau and events:
        return "OK"
    wrong = [name for name, ok in (("MAU", mau), ("event rows", events)) if not ok]
    return "MISMATCH: " + ", ".join(wrong)


def _shares(run: Run) -> str:
    shares = run.get("worker_shares") or []
    if len(shares) <= 1:
        return str(run.get("workers", 1))
    return f"{len(shares)}: " + " / ".join(_num(s, ".0%") for s in shares)


ROWS: list[tuple[str, Callable[[Run], str]]] = [
    ("events / distinct keys",
     lambda r: f"{_num(r.get('events'), ',')} / {_num(r.get('distinct_keys'), ',')}"),
    ("messages / events per message",
     lambda r: f"{_num(r.get('messages'), ',')} / {_num(r.get('events_per_message'), '.1f')}"),
    ("workers", _shares),
    ("pipeline, steady state", lambda r: _num(r.get("steady_events_per_s"), ",.0f",
                                              " events/s")),
    ("bare aiokafka + json", lambda r: _num(r.get("bare_events_per_s"), ",.0f", " events/s")),
    ("steady / bare", lambda r: _num(r.get("steady_to_bare_ratio"), ".3f")),
    ("bytes per key", lambda r: _num(r.get("bytes_per_key"), ",.0f")
     + f" (over {r.get('worker_dedupe_keys', 0):,} keys)"),
    ("bytes per window id", lambda r: _num(r.get("bytes_per_window_id"), ",.0f")
     + f" (over {r.get('worker_window_ids', 0):,} ids)"),
    ("latency produce → row, p99", _latency),
    ("MAU and event-row checks", _checks),
]


def table(runs: list[Run | None]) -> str:
    heads = ["failed" if r is None else f"{r.get('mode')} / {r.get('store')}" for r in runs]
    lines = ["| | " + " | ".join(heads) + " |", "|---" * (len(runs) + 1) + "|"]
    for label, cell in ROWS:
        cells = ["failed" if r is None else cell(r) for r in runs]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    runs = [load(Path(arg)) for arg in argv]
    print(table(runs))
    return 0 if all(r is not None and _checks(r) == "OK" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
