"""Throughput of the real pipeline against a bare aiokafka consumer on the same topic.

Starts a local tansu broker (and, with `--store server`, a clickhouse-server) and generates a
stream of CloudEvents in the current calendar month (UTC): people belong to one team each,
team sizes follow a power law, and a team's events arrive in bursts (a shift clocking in, a
script calling the API) interleaved with other teams' bursts; a share of events is re-sent
byte for byte a little later (producer retries). `--mode batch` (default) sends them through
`BatchingEmitter` (per-team CloudEvents batches, JSON arrays keyed by team); `--mode single`
sends one event per message, keyed by team.

`--store server` (default) runs the worker against the local clickhouse-server;
`--store cluster` starts a local cluster of 2 shards x 2 replicas (ZooKeeper and four
clickhouse-servers, metering/local/cluster.py) and gives the worker
`clickhouse://127.0.0.1:<first node>/<db>?cluster=metering` (replicated local tables behind
Distributed tables sharded by team; the bench reads the Distributed tables on that node with
`load_balancing = 'in_order'`, as the store does); `--store chdb` gives it
`METERING_STORE_URL=chdb:///<run folder>/chdb`, the embedded engine inside the worker process
(no server is started).

Stages, all in one run:
1. produce the stream (a backlog), then count the topic's messages;
2. a bare aiokafka consumer reads the topic and parses every message as JSON, counting
   events (array members in batch mode): the baseline;
3. `--workers N` (default 1) real `metering worker` processes, one consumer group, consume
   the backlog into the store. Steady state runs from the first commit the group makes to
   the poll that sees every partition committed to its end; committed offsets are turned
   into events with the per-offset event counts the bare consumer saw. Faust commits every
   few seconds, so either end may trail the work it reflects by that much, and runs of a
   few seconds (the small runs below) give unreliable rates. Each worker's share is its
   `metering_events_received_total` over the sum (a partition moved in a rebalance can be
   read twice, so the sum may exceed the events sent);
4. latency: with the workers still running, a live stream is produced at a paced rate
   (default half the measured steady rate, `--live-rate` to override) for `--live-seconds`;
   every `--sample-every`-th event is a marker with a user of its own, timed from the
   moment it is handed to the producer (or emitter). With a server (or the cluster) the
   bench polls the store every 50 ms for the markers not yet seen and takes the end of the
   first poll that returns one: an upper bound, at most one poll interval plus two query
   durations above the true value (typically 60-110 ms on 2 busy cores, longer when a poll
   stalls; the run's widest is printed as `latency_resolution_s`).
   chdb cannot be read while the worker holds it (one engine per process, bound to its
   path), so with chdb the markers' `inserted_at` (whole seconds) is read after the worker
   stops, and `inserted_at + 1 s - send time` is reported: an upper bound with 1 s
   resolution (`latency_method` says which);
5. the workers stop; every team's MAU and the distinct (source, id) event rows in the store
   are checked against the generated data (chdb: opened in this process once the worker
   has exited).

Worker memory: VmRSS when its /metrics endpoint first answers (after start-up: modules
loaded, store schema and topics ensured, app built; Faust's consumer not started yet, and an
idle worker stays at this RSS), and VmRSS and VmHWM once the backlog is consumed, with what
the worker's state holds then (`metering_dedupe_keys`, `metering_dedupe_window_ids`, and the
bytes gauges `metering_dedupe_bytes`, `metering_dedupe_window_bytes`).
`bytes_per_window_id` = window bytes / window ids; `bytes_per_key` = (RSS growth - window
bytes) / keys, i.e. everything else the worker grew by is charged to the keys (with chdb
that includes the embedded engine's growth); null when the worker lacks the byte gauges.
With several workers the figures are sums over them. The memory targets are stated over at
least 1M distinct (team, period, user) keys; the defaults give ~360k (batch mode). One run
with ~1.13M keys (about 1.1 GiB in this process to generate; several minutes):

    .venv/bin/python bench/throughput.py --events 3000000 --users 3000000

Nothing is asserted about speed: the figures are printed (text, or one JSON object with
--json). Exit status 1 when the counts do not match or a stage fails.

    .venv/bin/python bench/throughput.py [--mode batch|single] [--store server|cluster|chdb]
        [--workers N] [--events N] [--teams T] [--users U] [--duplicates 0.1]
        [--burst-mean 30] [--partitions 8] [--live-seconds 30] [--live-rate R]
        [--sample-every 1000] [--worker-batch-events N] [--worker-batch-bytes N]
        [--worker-linger S] [--profile PATH] [--seed S] [--json]

A small run (about half a minute):

    .venv/bin/python bench/throughput.py --events 100000 --teams 5000 --users 50000 \
        --live-seconds 5

`make bench` runs batch/server, single/server and batch/chdb with --json and prints a
markdown table of the three (bench/table.py); `make bench BENCH_ARGS="..."` passes options
to all three.

The stages live beside this file: workload.py (the generated stream), baseline.py (the bare
consumer), pipeline.py (the workers), live.py (the live stream and its markers), stores.py
(reading either store) and report.py (the figures). They are imported by their plain names
because running this file puts bench/ on sys.path.

`--profile PATH` records each worker during the steady phase with py-spy (raw collapsed
stacks; PATH, or PATH-wN with several workers; py-spy is not a project dependency:
`.venv/bin/pip install py-spy`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

from aiokafka.errors import KafkaError as AIOKafkaError
from baseline import BenchError, bare_consume
from kafka.errors import KafkaError
from pipeline import CLUSTER_NAME, WorkerOptions, measure_worker
from report import Report, build_report, render
from workload import Population, Stream, generate, produce

from aggregation import StoreError
from metering.kafka_io import BrokerError, ensure_topics, group_lag
from metering.local import (
    LocalClickHouse,
    ServiceError,
    start_broker,
    start_clickhouse,
    start_cluster,
)

DEFAULT_EVENTS = {"batch": 1_200_000, "single": 200_000}
DEFAULT_TEAMS = 100_000
DEFAULT_USERS = 1_000_000
DEFAULT_DUPLICATES = 0.1
DEFAULT_BURST_MEAN = 30.0
DEFAULT_PARTITIONS = 8
DEFAULT_LIVE_SECONDS = 30.0
DEFAULT_SAMPLE_EVERY = 1000
DEFAULT_SEED = 20260704
CLUSTER_SHARDS = 2
CLUSTER_REPLICAS = 2


def run(args: argparse.Namespace) -> Report:
    rng = random.Random(args.seed)
    tag = uuid.uuid4().hex[:8]
    topic, group = f"bench-events-{tag}", f"bench-metering-{tag}"
    events_total: int = args.events or DEFAULT_EVENTS[args.mode]
    options = WorkerOptions(
        mode=args.mode, store=args.store, workers=args.workers, partitions=args.partitions,
        batch_events=args.worker_batch_events, batch_bytes=args.worker_batch_bytes,
        linger_seconds=args.worker_linger, profile=args.profile, live_rate=args.live_rate,
        live_seconds=args.live_seconds, sample_every=args.sample_every,
    )
    _stage(f"generating {events_total:,} events for {args.teams:,} teams, "
           f"{args.users:,} users, bursts of {args.burst_mean:g} on average")
    population = Population(rng, teams=args.teams, users=args.users, now=datetime.now(UTC))
    stream = Stream(population, burst_mean=args.burst_mean)
    work = generate(stream, events=events_total, duplicates=args.duplicates)
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="metering-bench-")))
        broker = stack.enter_context(start_broker(root / "broker"))
        clickhouse = _start_store(stack, root, args.store)
        ensure_topics(broker.bootstrap, [topic], partitions=args.partitions)

        _stage(f"producing to {topic} ({args.partitions} partitions, {args.mode} mode, "
               f"{len({raw[1] for raw in work.events}):,} distinct (team, period, user) keys)")
        produced = produce(broker.bootstrap, topic, population, work.events, mode=args.mode)
        # A group with no commits lags by the whole topic: proof every message arrived once.
        stored = group_lag(broker.bootstrap, group=f"bench-count-{tag}", topic=topic)
        if stored != produced.messages:
            raise BenchError(f"topic holds {stored} messages, {produced.messages} were sent")

        _stage(f"bare aiokafka consumer ({produced.messages:,} messages)")
        bare = asyncio.run(bare_consume(
            broker.bootstrap, topic, group=f"bench-bare-{tag}", expected=produced.messages))
        if bare.events != events_total:
            raise BenchError(f"bare consumer read {bare.events} events, {events_total} were sent")

        worker = measure_worker(
            root, broker, clickhouse, tag=tag, topic=topic, group=group, bare=bare,
            stream=stream, total_events=events_total, options=options, stage=_stage,
        )
    return build_report(population, work, produced, bare, worker, options)


def _start_store(stack: contextlib.ExitStack, root: Path, store: str) -> LocalClickHouse | None:
    """The server the workers store into (with `cluster`: the first node of a local 2x2
    cluster, stopped with the stack); None for chdb, which the worker embeds."""
    if store == "server":
        return stack.enter_context(start_clickhouse(root / "clickhouse"))
    if store == "cluster":
        _stage(f"starting a {CLUSTER_SHARDS}x{CLUSTER_REPLICAS} ClickHouse cluster "
               "(ZooKeeper and 4 servers)")
        cluster = stack.enter_context(start_cluster(
            root / "cluster", name=CLUSTER_NAME, shards=CLUSTER_SHARDS,
            replicas=CLUSTER_REPLICAS))
        return cluster.node(0, 0)
    return None


def _stage(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not in [0, 1)")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _at_least_one(text: str) -> float:
    value = float(text)
    if not value >= 1:
        raise argparse.ArgumentTypeError(f"{text} is below 1")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("batch", "single"), default="batch",
                        help="per-team batch messages via BatchingEmitter, or one event each")
    parser.add_argument("--events", type=_positive,
                        help="events to produce, re-sent duplicates included (default "
                             + ", ".join(f"{v:,} in {k} mode" for k, v in DEFAULT_EVENTS.items())
                             + ")")
    parser.add_argument("--teams", type=_positive, default=DEFAULT_TEAMS)
    parser.add_argument("--users", type=_positive, default=DEFAULT_USERS,
                        help="people across all teams, each in one team")
    parser.add_argument("--duplicates", type=_share, default=DEFAULT_DUPLICATES,
                        help="share of events that re-send an earlier one byte for byte")
    parser.add_argument("--burst-mean", type=_at_least_one, default=DEFAULT_BURST_MEAN,
                        help="mean events in a team's burst")
    parser.add_argument("--partitions", type=_positive, default=DEFAULT_PARTITIONS)
    parser.add_argument("--live-seconds", type=_positive_float, default=DEFAULT_LIVE_SECONDS,
                        help="length of the paced live stream used for latency")
    parser.add_argument("--live-rate", type=_positive_float,
                        help="events/s of the live stream (default half the steady rate)")
    parser.add_argument("--sample-every", type=_positive, default=DEFAULT_SAMPLE_EVERY,
                        help="every Nth live event is a latency marker")
    parser.add_argument("--store", choices=("server", "cluster", "chdb"), default="server",
                        help="the worker's store: local clickhouse-server, a local 2x2 "
                             "cluster of them, or embedded chdb")
    parser.add_argument("--workers", type=_positive, default=1,
                        help="worker processes in one consumer group (server stores only)")
    parser.add_argument("--worker-batch-events", type=_positive,
                        help="METERING_BATCH_EVENTS for the worker (events per batch)")
    parser.add_argument("--worker-batch-bytes", type=_positive,
                        help="METERING_BATCH_BYTES for the worker (bytes per batch)")
    parser.add_argument("--worker-linger", type=_positive_float,
                        help="METERING_BATCH_LINGER_SECONDS for the worker")
    parser.add_argument("--profile", type=Path,
                        help="record the worker's steady phase with py-spy (raw stacks) here")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.store == "chdb" and args.workers > 1:
        # chdb binds one engine per process to its path: two workers cannot share a store.
        parser.error("--store chdb runs one worker: chdb binds its path to one process")
    try:
        report = run(args)
    except (BenchError, BrokerError, ServiceError, StoreError) as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    except (KafkaError, AIOKafkaError) as exc:
        print(f"bench: error: broker: {exc!r}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    print(render(report, as_json=args.json))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
