"""How much disk the store's tables take per million events, as stored and fully merged.

Generates the stream of bench/workload.py (people in teams of power-law sizes, per-team
bursts, a share of events re-sent byte for byte) over the `--months` full calendar months
before the current one (UTC): the population's month is stretched onto each of them, so the
same people are active every month and are counted once per month. The events go through
what the worker does with them, in batches of `--batch-events` (the worker's default): a
re-sent event is dropped (the worker's window), `FirstSeen` places the rest in their period
(calendar months in UTC, as for teams without a catalog) and picks the first-seen rows (a
key is written again when a later batch brings an earlier event for it, as in the worker),
and the store writes them with `add_event_columns` and `add_active_user_columns`.

Each engine of `--engines` (default all three) gets the same batches:
- server: one local clickhouse-server, `clickhouse://127.0.0.1:PORT/sizes`;
- cluster: a local cluster of 2 shards x 2 replicas (ZooKeeper and four servers,
  metering/local/cluster.py), `clickhouse://...?cluster=metering`: replicated local tables
  `<table>_local` behind Distributed tables sharded by team;
- chdb: the embedded engine in a folder, `chdb:///path` (opened in this process).

Then every partition holding rows is merged with `OPTIMIZE TABLE ... PARTITION ID ... FINAL`
(on the cluster: the local tables on the first replica of each shard, which the other
replica follows through ZooKeeper; the bench waits until every replica has synced and no
merge runs), and the active parts of `system.parts` give each table's parts, rows, bytes on
disk, compressed and uncompressed data bytes; on the cluster summed over the four nodes
(every row is stored twice), with each node's own figures beside them. Per-column
compressed bytes come from `system.columns`, in the JSON only.

Figures per row (on disk / rows: bytes per event row, bytes per first-seen row) and per
million events sent (re-sends included: on disk x 1,000,000 / `--events`). Nothing is
scaled: all `--events` are written (1M takes a few minutes for the three engines on two
cores). Event ids are 16 random hex digits (as the bench's producer sends), the least
compressible column.

    .venv/bin/python bench/table_sizes.py [--events 1000000] [--engines server,cluster,chdb]
        [--months 3] [--teams 100000] [--users 1000000] [--duplicates 0.1]
        [--burst-mean 30] [--batch-events 20000] [--seed S] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from baseline import BenchError
from clickhouse_driver import Client
from clickhouse_driver import errors as clickhouse_errors
from workload import KINDS, Population, Raw, Stream, generate

from aggregation import ActiveUserColumns, EventColumns, StoreError, open_store
from metering.local import LocalClickHouse, ServiceError, start_clickhouse, start_cluster
from metering.settings import DEFAULT_BATCH_EVENTS
from metering.stream.first_seen import EventsIn, FirstSeen

ENGINES = ("server", "cluster", "chdb")
DEFAULT_EVENTS = 1_000_000
DEFAULT_MONTHS = 3
DEFAULT_TEAMS = 100_000
DEFAULT_USERS = 1_000_000
DEFAULT_DUPLICATES = 0.1
DEFAULT_BURST_MEAN = 30.0
DEFAULT_SEED = 20260704
DATABASE = "sizes"
CHDB_DATABASE = "metering"  # the database chdb stores use (aggregation's ChdbStore)
CLUSTER_NAME = "metering"
CLUSTER_SHARDS = 2
CLUSTER_REPLICAS = 2
SYNC_TIMEOUT = 300.0
MIB = 1 << 20

Row = tuple[Any, ...]
Query = Callable[[str], list[Row]]


# --- the workload, as the worker would write it ----------------------------------------------

@dataclass(frozen=True, slots=True)
class Batch:
    events: EventColumns
    active_users: ActiveUserColumns


@dataclass(frozen=True, slots=True)
class Workload:
    batches: list[Batch]
    events: int  # sent, re-sends included
    event_rows: int  # new to the window: written
    first_seen_rows: int
    keys: int  # distinct (team, period, user)
    months: list[date]
    seconds: float


def _month_after(start: datetime) -> datetime:
    return datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)


def full_months(now: datetime, count: int) -> list[datetime]:
    """The first instants of the `count` calendar months before `now`'s (UTC), oldest first."""
    starts: list[datetime] = []
    first = datetime(now.year, now.month, 1, tzinfo=UTC)
    for _ in range(count):
        first = (first - timedelta(days=1)).replace(day=1)
        starts.append(first)
    return starts[::-1]


def _batch(first_seen: FirstSeen, population: Population, raws: Sequence[Raw], *,
           base: int, length: int, now: datetime) -> Batch:
    """One worker batch: `raws` (seconds of the population's month, stretched onto the month
    of `length` seconds starting at `base`) placed and deduped by key."""
    names = population.team_names
    seconds = np.fromiter((raw[3] for raw in raws), np.int64, len(raws))
    events = EventsIn(
        team=[names[raw[0]] for raw in raws],
        user_id=[raw[1] for raw in raws],
        source=[KINDS[raw[2]][1] for raw in raws],
        event_id=[f"{raw[4]:016x}" for raw in raws],
        event_type=[KINDS[raw[2]][0] for raw in raws],
        time=base + seconds * length // population.span,
    )
    planned = first_seen.plan(events, now=now)
    first_seen.mark_written(planned)
    return Batch(planned.events, planned.active_users)


def build(args: argparse.Namespace) -> Workload:
    started = time.perf_counter()
    now = datetime.now(UTC)
    months = full_months(now, args.months)
    rng = random.Random(args.seed)
    # The population's own month is the last full one; each month gets its seconds stretched.
    population = Population(rng, teams=args.teams, users=args.users,
                            now=_month_after(months[-1]) - timedelta(seconds=1))
    stream = Stream(population, burst_mean=args.burst_mean)
    first_seen = FirstSeen({})
    seen: set[int] = set()
    batches: list[Batch] = []
    for index, start in enumerate(months):
        count = args.events * (index + 1) // len(months) - args.events * index // len(months)
        length = int((_month_after(start) - start).total_seconds()) - 60
        fresh: list[Raw] = []
        for raw in generate(stream, events=count, duplicates=args.duplicates).events:
            if raw[4] not in seen:  # a re-send: the worker's window drops it
                seen.add(raw[4])
                fresh.append(raw)
        for lo in range(0, len(fresh), args.batch_events):
            batches.append(_batch(first_seen, population, fresh[lo:lo + args.batch_events],
                                  base=int(start.timestamp()), length=length, now=now))
    return Workload(
        batches=batches, events=args.events,
        event_rows=sum(len(b.events) for b in batches),
        first_seen_rows=sum(len(b.active_users) for b in batches),
        keys=len(first_seen), months=[m.date() for m in months],
        seconds=time.perf_counter() - started,
    )


def write(url: str, workload: Workload) -> float:
    """Every batch through the store at `url`, as the worker writes it; the seconds taken."""
    store = open_store(url)
    try:
        store.ensure_schema()
        started = time.perf_counter()
        for batch in workload.batches:
            store.add_event_columns(batch.events)
            store.add_active_user_columns(batch.active_users)
        return time.perf_counter() - started
    finally:
        store.close()


# --- what the engines hold -------------------------------------------------------------------

@dataclass(slots=True)
class Size:
    parts: int = 0
    rows: int = 0
    bytes_on_disk: int = 0
    compressed: int = 0
    uncompressed: int = 0

    def add(self, other: Size) -> None:
        self.parts += other.parts
        self.rows += other.rows
        self.bytes_on_disk += other.bytes_on_disk
        self.compressed += other.compressed
        self.uncompressed += other.uncompressed


@dataclass(slots=True)
class EngineSizes:
    engine: str
    version: str
    url: str
    write_seconds: float = 0.0
    optimize_seconds: float = 0.0
    tables: dict[str, Size] = field(default_factory=dict)  # summed over the nodes
    nodes: dict[str, dict[str, Size]] = field(default_factory=dict)  # cluster: per replica
    columns: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # [compr, uncompr]
    replicas: int = 1


def _parts_sql(database: str) -> str:
    return ("SELECT table, partition_id, count(), sum(rows), sum(bytes_on_disk), "  # noqa: S608
            "sum(data_compressed_bytes), sum(data_uncompressed_bytes) FROM system.parts "
            f"WHERE database = '{database}' AND active "
            "GROUP BY table, partition_id ORDER BY table, partition_id")


def _columns_sql(database: str) -> str:
    return ("SELECT table, name, data_compressed_bytes, data_uncompressed_bytes "  # noqa: S608
            f"FROM system.columns WHERE database = '{database}' ORDER BY table, name")


def _partitions(query: Query, database: str) -> list[tuple[str, str]]:
    """(table, partition id) of every partition holding rows on this node."""
    return [(str(table), str(pid)) for table, pid, _, rows, *_ in query(_parts_sql(database))
            if int(str(rows))]


def optimize(query: Query, database: str) -> None:
    """Merge every partition holding rows into one part (an empty replicated table refuses
    OPTIMIZE FINAL on 18.16: tables without rows are left alone)."""
    for table, pid in _partitions(query, database):
        query(f"OPTIMIZE TABLE {database}.{table} PARTITION ID '{pid}' FINAL")


def read_sizes(query: Query, database: str) -> dict[str, Size]:
    sizes: dict[str, Size] = {}
    for table, _, parts, rows, on_disk, compressed, uncompressed in query(_parts_sql(database)):
        sizes.setdefault(str(table), Size()).add(Size(
            int(str(parts)), int(str(rows)), int(str(on_disk)), int(str(compressed)),
            int(str(uncompressed))))
    return sizes


def read_columns(query: Query, database: str, into: dict[str, dict[str, list[int]]]) -> None:
    for table, name, compressed, uncompressed in query(_columns_sql(database)):
        both = into.setdefault(str(table), {}).setdefault(str(name), [0, 0])
        both[0] += int(str(compressed))
        both[1] += int(str(uncompressed))


@contextlib.contextmanager
def server_query(port: int, settings: dict[str, Any] | None = None) -> Iterator[Query]:
    client = Client(host="127.0.0.1", port=port, send_receive_timeout=600,
                    settings=settings or {})
    try:
        yield lambda sql: [tuple(row) for row in client.execute(sql)]
    finally:
        client.disconnect()


def measure_server(root: Path, workload: Workload) -> EngineSizes:
    with start_clickhouse(root / "server") as server, server_query(server.tcp_port) as query:
        sizes = EngineSizes("server", str(query("SELECT version()")[0][0]),
                            f"clickhouse://127.0.0.1:{server.tcp_port}/{DATABASE}")
        sizes.write_seconds = write(sizes.url, workload)
        started = time.perf_counter()
        optimize(query, DATABASE)
        sizes.optimize_seconds = time.perf_counter() - started
        sizes.tables = read_sizes(query, DATABASE)
        read_columns(query, DATABASE, sizes.columns)
    return sizes


def _wait_settled(nodes: Sequence[LocalClickHouse], database: str) -> None:
    """Every replica has fetched and merged what its shard holds, and no merge is running."""
    deadline = time.monotonic() + SYNC_TIMEOUT
    for node in nodes:
        with server_query(node.tcp_port) as query:
            for table in {table for table, _ in _partitions(query, database)}:
                query(f"SYSTEM SYNC REPLICA {database}.{table}")
            while True:
                busy = sum(int(str(n)) for (n,) in query(
                    "SELECT count() FROM system.replication_queue "  # noqa: S608
                    f"WHERE database = '{database}' UNION ALL "
                    f"SELECT count() FROM system.merges WHERE database = '{database}'"))
                if not busy:
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"node :{node.tcp_port} still has {busy} replication "
                                     f"entries or merges after {SYNC_TIMEOUT:.0f}s")
                time.sleep(0.2)


def measure_cluster(root: Path, workload: Workload) -> EngineSizes:
    with start_cluster(root / "cluster", name=CLUSTER_NAME, shards=CLUSTER_SHARDS,
                       replicas=CLUSTER_REPLICAS) as cluster:
        first = cluster.node(0, 0)
        with server_query(first.tcp_port) as query:
            version = str(query("SELECT version()")[0][0])
        sizes = EngineSizes(
            f"cluster {CLUSTER_SHARDS}x{CLUSTER_REPLICAS}", version,
            f"clickhouse://127.0.0.1:{first.tcp_port}/{DATABASE}?cluster={CLUSTER_NAME}",
            replicas=CLUSTER_REPLICAS)
        sizes.write_seconds = write(sizes.url, workload)
        started = time.perf_counter()
        _wait_settled(cluster.all_nodes, DATABASE)
        for replicas in cluster.nodes:
            # The first replica of the shard; the other follows through ZooKeeper.
            with server_query(replicas[0].tcp_port,
                              {"replication_alter_partitions_sync": 2}) as query:
                optimize(query, DATABASE)
        _wait_settled(cluster.all_nodes, DATABASE)
        sizes.optimize_seconds = time.perf_counter() - started
        for shard, replicas in enumerate(cluster.nodes, start=1):
            for replica, node in enumerate(replicas, start=1):
                with server_query(node.tcp_port) as query:
                    tables = read_sizes(query, DATABASE)
                    read_columns(query, DATABASE, sizes.columns)
                sizes.nodes[f"s{shard}r{replica}"] = tables
                for table, size in tables.items():
                    sizes.tables.setdefault(table, Size()).add(size)
    return sizes


class _Result(Protocol):
    def bytes(self) -> bytes: ...


class _Session(Protocol):
    """The part of chdb's untyped Session used here."""

    def query(self, sql: str, fmt: str) -> _Result: ...

    def close(self) -> None: ...


def measure_chdb(root: Path, workload: Workload) -> EngineSizes:
    # Imported here: the embedded engine is only loaded for chdb runs.
    from chdb import session as chdb_session

    path = (root / "chdb").resolve()
    sizes = EngineSizes("chdb", "", f"chdb://{path}")
    sizes.write_seconds = write(sizes.url, workload)
    # The store is closed: this process opens the same path again, to merge and read it.
    open_session: Callable[[str], _Session] = chdb_session.Session
    sess = open_session(str(path))

    def query(sql: str) -> list[Row]:
        raw = sess.query(sql, "JSONCompact").bytes()
        return [tuple(row) for row in json.loads(raw)["data"]] if raw.strip() else []

    try:
        sizes.version = str(query("SELECT version()")[0][0])
        started = time.perf_counter()
        optimize(query, CHDB_DATABASE)
        sizes.optimize_seconds = time.perf_counter() - started
        sizes.tables = read_sizes(query, CHDB_DATABASE)
        read_columns(query, CHDB_DATABASE, sizes.columns)
    finally:
        sess.close()
    return sizes


MEASURE: dict[str, Callable[[Path, Workload], EngineSizes]] = {
    "server": measure_server, "cluster": measure_cluster, "chdb": measure_chdb,
}


# --- the figures ------------------------------------------------------------------------------

def _figures(size: Size, events: int) -> dict[str, Any]:
    return {
        "parts": size.parts, "rows": size.rows, "bytes_on_disk": size.bytes_on_disk,
        "data_compressed_bytes": size.compressed,
        "data_uncompressed_bytes": size.uncompressed,
        "bytes_on_disk_per_row": size.bytes_on_disk / size.rows if size.rows else None,
        "bytes_on_disk_per_million_events": size.bytes_on_disk * 1_000_000 / events,
    }


def _total(tables: dict[str, Size]) -> Size:
    total = Size()
    for size in tables.values():
        total.add(size)
    return total


def to_json(workload: Workload, runs: list[EngineSizes], args: argparse.Namespace) -> str:
    out: dict[str, Any] = {
        "events": workload.events, "event_rows": workload.event_rows,
        "first_seen_rows": workload.first_seen_rows, "distinct_keys": workload.keys,
        "months": [m.isoformat() for m in workload.months], "teams": args.teams,
        "users": args.users, "duplicates": args.duplicates, "batch_events": args.batch_events,
        "scaled": False, "generate_seconds": round(workload.seconds, 2), "engines": {},
    }
    for run in runs:
        events = workload.events
        out["engines"][run.engine] = {
            "version": run.version, "url": run.url, "replicas": run.replicas,
            "write_seconds": round(run.write_seconds, 2),
            "optimize_seconds": round(run.optimize_seconds, 2),
            "tables": {t: _figures(s, events) for t, s in sorted(run.tables.items())},
            "total": _figures(_total(run.tables), events),
            "nodes": {node: {t: _figures(s, events) for t, s in sorted(tables.items())}
                      for node, tables in run.nodes.items()},
            "columns": {t: {c: {"data_compressed_bytes": v[0], "data_uncompressed_bytes": v[1]}
                            for c, v in sorted(cols.items()) if v[1]}
                        for t, cols in sorted(run.columns.items())
                        if any(v[1] for v in cols.values())},
        }
    return json.dumps(out, indent=2)


_HEAD = (f"  {'table':<24}{'parts':>6}{'rows':>12}{'on disk':>12}{'compressed':>12}"
         f"{'uncompr.':>12}{'B/row':>8}{'MiB/1M ev':>11}")


def _line(name: str, size: Size, events: int) -> str:
    per_row = f"{size.bytes_on_disk / size.rows:.1f}" if size.rows else "-"
    return (f"  {name:<24}{size.parts:>6,}{size.rows:>12,}{size.bytes_on_disk / MIB:>8.1f} MiB"
            f"{size.compressed / MIB:>8.1f} MiB{size.uncompressed / MIB:>8.1f} MiB"
            f"{per_row:>8}{size.bytes_on_disk / MIB * 1_000_000 / events:>11.2f}")


def render(workload: Workload, runs: list[EngineSizes]) -> str:
    w = workload
    lines = [
        f"workload   {w.events:,} events sent (re-sends included) over "
        f"{', '.join(m.strftime('%Y-%m') for m in w.months)} (UTC calendar months)",
        f"           {w.event_rows:,} event rows (new to the window), {w.first_seen_rows:,} "
        f"first-seen rows, {w.keys:,} distinct (team, period, user) keys; "
        f"{len(w.batches):,} batches, generated and planned in {w.seconds:.1f}s",
        "all events written, nothing scaled; MiB/1M ev = on disk x 1,000,000 / events sent; "
        "B/row = on disk / rows (an event row, a first-seen row)",
    ]
    for run in runs:
        lines += ["", f"{run.engine} (ClickHouse {run.version}): written in "
                  f"{run.write_seconds:.1f}s, merged (OPTIMIZE FINAL) in "
                  f"{run.optimize_seconds:.1f}s; active parts after the merge", _HEAD]
        if run.replicas > 1:
            lines[-2] += f"; sums over the nodes, each row kept by {run.replicas} replicas"
        lines += [_line(t, s, w.events) for t, s in sorted(run.tables.items())]
        total = _total(run.tables)
        lines.append(_line("total", total, w.events))
        if run.replicas > 1:
            one = Size(total.parts // run.replicas, total.rows // run.replicas,
                       total.bytes_on_disk // run.replicas, total.compressed // run.replicas,
                       total.uncompressed // run.replicas)
            lines.append(_line(f"total / {run.replicas}", one, w.events))
            lines.append("  per node:")
            for node, tables in run.nodes.items():
                lines += [_line(f"{node} {t}", s, w.events) for t, s in sorted(tables.items())]
    return "\n".join(lines)


# --- command line -----------------------------------------------------------------------------

def _stage(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1)")
    return value


def _at_least_one(text: str) -> float:
    value = float(text)
    if not value >= 1:
        raise argparse.ArgumentTypeError(f"{text} is below 1")
    return value


def _engines(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    wrong = [name for name in names if name not in ENGINES]
    if wrong or not names:
        raise argparse.ArgumentTypeError(
            f"unknown engine {', '.join(wrong) or '(none)'}: pick from {', '.join(ENGINES)}")
    return list(dict.fromkeys(names))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=_positive, default=DEFAULT_EVENTS,
                        help="events sent, re-sends included")
    parser.add_argument("--engines", type=_engines, default=list(ENGINES),
                        help="comma-separated: server, cluster, chdb (default all)")
    parser.add_argument("--months", type=_positive, default=DEFAULT_MONTHS,
                        help="full calendar months before the current one to spread over")
    parser.add_argument("--teams", type=_positive, default=DEFAULT_TEAMS)
    parser.add_argument("--users", type=_positive, default=DEFAULT_USERS,
                        help="people across all teams, each in one team")
    parser.add_argument("--duplicates", type=_share, default=DEFAULT_DUPLICATES,
                        help="share of events that re-send an earlier one byte for byte")
    parser.add_argument("--burst-mean", type=_at_least_one, default=DEFAULT_BURST_MEAN,
                        help="mean events in a team's burst")
    parser.add_argument("--batch-events", type=_positive, default=DEFAULT_BATCH_EVENTS,
                        help="events per worker batch (one insert per table each)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    try:
        _stage(f"generating {args.events:,} events over {args.months} months "
               f"({args.teams:,} teams, {args.users:,} users)")
        workload = build(args)
        runs = []
        with tempfile.TemporaryDirectory(prefix="metering-sizes-") as tmp:
            for engine in args.engines:
                _stage(f"{engine}: writing {len(workload.batches):,} batches, merging, reading "
                       "system.parts")
                runs.append(MEASURE[engine](Path(tmp), workload))
    except (BenchError, ServiceError, StoreError) as exc:
        print(f"table_sizes: error: {exc}", file=sys.stderr)
        return 1
    except (clickhouse_errors.Error, OSError, EOFError, RuntimeError) as exc:
        print(f"table_sizes: error: {' '.join(str(exc).split())[:500]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("table_sizes: interrupted", file=sys.stderr)
        return 130
    print(to_json(workload, runs, args) if args.json else render(workload, runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
