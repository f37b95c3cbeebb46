"""What each library on the worker's hot path costs per event, measured in one run.

Generates the throughput bench's stream (batch messages of `--per-message` events), then
times, on the same batches of `--batch-events` events: the careful decoder (pydantic), plain
`json.loads`, msgspec's typed decode alone, the whole fast decoder (`decode_batch`: msgspec,
columns, the vectorised time parse), the 128-bit keys (xxh3), the key tables (numpy), period
placement, the ledger rows alone (`batch_ledger`, per message, team and period), the whole
plan (`ActivityBatcher.plan` + `committed`, ledger included), and the column inserts (events,
first-seen users, ledger) on a local ClickHouse server (clickhouse-driver, NumPy columns) and
on chdb (Arrow). Each figure
is CPU time of this process per event (for chdb the engine runs in-process, so its work is
included), the median of `--repeat` rounds; the machine's speed varies, so compare figures
of one run.

    .venv/bin/python bench/costs.py [--events 100000] [--batch-events 20000] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from workload import Population, Stream, generate

from aggregation import open_store
from metering.local import start_clickhouse
from metering.stream import ActivityBatcher
from metering.stream.keys import KeyTable, hash_keys
from metering.stream.ledger import batch_ledger
from metering.stream.placement import PeriodPlacer
from schemas import decode_batch, decode_message


def _per_event(work: Callable[[], object], events: int, repeat: int) -> float:
    """Median CPU nanoseconds per event of `work` over `repeat` rounds."""
    rounds = []
    for _ in range(repeat):
        started = time.process_time()
        work()
        rounds.append((time.process_time() - started) / events * 1e9)
    return statistics.median(rounds)


def measure(args: argparse.Namespace) -> dict[str, float]:
    now = datetime.now(UTC)
    population = Population(random.Random(args.seed), teams=args.teams, users=args.users,
                            now=now)
    raws = generate(Stream(population, burst_mean=30.0), events=args.events, duplicates=0.1)
    events = [json.dumps(population.event(raw), separators=(",", ":")).encode()
              for raw in raws.events][: args.batch_events]
    per = args.per_message
    values = [b"[" + b",".join(events[i : i + per]) + b"]" for i in range(0, len(events), per)]
    n, repeat = len(events), args.repeat
    decoded = decode_batch(values, now=now).events
    placer = PeriodPlacer({})
    placed = placer.place(decoded.team, decoded.time, now=now)
    keys = hash_keys(decoded.source, decoded.event_id)

    def fill_table() -> None:
        table = KeyTable()
        table.add(keys[table.find(keys) < 0])

    def plan() -> None:
        batcher = ActivityBatcher(calendars={}, dedupe_window=1_000_000,
                                  grace=timedelta(hours=1))
        batcher.committed(batcher.plan(values, now=now))

    costs = {
        "pydantic_decode_message_ns": _per_event(
            lambda: [decode_message(v, now=now) for v in values], n, repeat),
        "json_loads_ns": _per_event(lambda: [json.loads(v) for v in values], n, repeat),
        "decode_batch_ns": _per_event(lambda: decode_batch(values, now=now), n, repeat),
        "xxh3_keys_source_id_ns": _per_event(
            lambda: hash_keys(decoded.source, decoded.event_id), n, repeat),
        "xxh3_keys_team_period_user_ns": _per_event(
            lambda: hash_keys(decoded.team, placed.period_start.tolist(), decoded.user_id),
            n, repeat),
        "numpy_key_table_find_add_ns": _per_event(fill_table, n, repeat),
        "period_placement_ns": _per_event(
            lambda: placer.place(decoded.team, decoded.time, now=now), n, repeat),
        "plan_and_commit_ns": _per_event(plan, n, repeat),
    }
    batcher = ActivityBatcher(calendars={}, dedupe_window=1_000_000, grace=timedelta(hours=1))
    batch = batcher.plan(values, now=now)
    messages = len(values)
    positions = (["activity-events"] * messages, [0] * messages, list(range(messages)))
    no_flags = np.zeros(n, dtype=np.bool_)
    month = placed.period_start  # every event in its own period, as the plan places it

    def ledger() -> None:
        batch_ledger(message=decoded.message, team=decoded.team, period_start=month,
                     duplicate=no_flags, late=no_flags, rejections={},
                     period_of=lambda team, message: now.date()).columns(*positions)

    costs["ledger_rows_ns"] = _per_event(ledger, n, repeat)
    rows = batch.ledger.columns(*positions)
    with tempfile.TemporaryDirectory(prefix="metering-costs-") as root:
        with start_clickhouse(Path(root) / "clickhouse") as server:
            store = open_store(f"clickhouse://127.0.0.1:{server.tcp_port}/costs")
            store.ensure_schema()
            store.add_event_columns(batch.events)  # the first insert imports NumPy support
            costs["server_insert_events_ns"] = _per_event(
                lambda: store.add_event_columns(batch.events), n, repeat)
            costs["server_insert_active_users_ns"] = _per_event(
                lambda: store.add_active_user_columns(batch.active_users), n, repeat)
            costs["server_insert_ledger_ns"] = _per_event(
                lambda: store.add_ledger_columns(rows), n, repeat)
            store.close()
        embedded = open_store(f"chdb://{Path(root) / 'chdb'}")
        embedded.ensure_schema()
        costs["chdb_insert_events_ns"] = _per_event(
            lambda: embedded.add_event_columns(batch.events), n, repeat)
        costs["chdb_insert_active_users_ns"] = _per_event(
            lambda: embedded.add_active_user_columns(batch.active_users), n, repeat)
        costs["chdb_insert_ledger_ns"] = _per_event(
            lambda: embedded.add_ledger_columns(rows), n, repeat)
        embedded.close()
    costs["events"] = n
    costs["active_user_rows_per_event"] = len(batch.active_users) / n
    costs["ledger_rows_per_event"] = len(rows) / n
    return costs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="stream to draw from")
    parser.add_argument("--batch-events", type=int, default=20_000, help="events measured")
    parser.add_argument("--per-message", type=int, default=24, help="events per message")
    parser.add_argument("--teams", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=20260704)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    costs = measure(args)
    if args.json:
        print(json.dumps(costs))
    else:
        for name, value in costs.items():
            print(f"{name:34} {value:>10,.0f}" if name.endswith("_ns") else f"{name:34} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
