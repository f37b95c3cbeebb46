"""Events per second through POST /v1/events into the events topic, batch and single.

Starts a local broker and a `metering serve` (chdb store in a temporary folder, one catalog
team; ingest checks no catalog), then posts `--events` events per mode from `--concurrency`
concurrent requests of an httpx async client: `batch` sends CloudEvents batch arrays of
`--batch-size` events over `--teams` teams, `single` one structured event per request. A
request's answer comes after the broker acknowledged its messages, so the rate is events
written to the topic. The same single requests with a wrong content type (answered 415
before the body is read) give the HTTP floor of this machine and client ("refused").
Each mode also reports the serve process's CPU time (Linux /proc): the client is one Python
process and often the bound here, so events per serve CPU second tell what one serve core
takes. Afterwards the topic must hold exactly the messages expected (one per
team of each batch request, one per single request), counted as the lag of a fresh group.

    python bench/ingest.py --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import httpx

from metering.kafka_io import ensure_topics, group_lag
from metering.local.services import ManagedProcess, free_port, start_broker

MODES: Final = ("batch", "single")
DEFAULT_EVENTS: Final = {"batch": 100_000, "single": 5_000}
DEFAULT_BATCH_SIZE: Final = 500
DEFAULT_CONCURRENCY: Final = 16
DEFAULT_TEAMS: Final = 20
DEFAULT_PARTITIONS: Final = 8
START_TIMEOUT_SECONDS: Final = 60.0
TOKEN: Final = "bench-token"  # noqa: S105 - a local throwaway token
CATALOG: Final = """plans:
  power: {name: Power plan, currency: USD, base_fee: "10.00", included_users: 5,
          overage_price: "2.00"}
accounts:
  - {team: team-0, plan: power, start_date: "2026-01-01", timezone: UTC}
"""
TYPES: Final = {"batch": "application/cloudevents-batch+json",
                "single": "application/cloudevents+json"}


class BenchError(RuntimeError):
    """The bench could not run or its result does not hold."""


REFUSED_REQUESTS: Final = 1000


@dataclass(frozen=True)
class Result:
    mode: str
    events: int
    requests: int
    messages: int
    concurrency: int
    seconds: float
    events_per_second: float
    requests_per_second: float
    serve_cpu_seconds: float
    """CPU time of the serve process over the run (the client, one Python process, is often
    the bound on this machine: this tells what one serve core takes)."""
    events_per_serve_cpu_second: float


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a Linux process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _event(n: int, team: str, at: str) -> dict[str, object]:
    return {"specversion": "1.0", "id": f"e{n}", "source": "bench", "type": "login",
            "time": at, "subject": team, "data": {"user_id": f"u{n % 10_000}"}}


def bodies(mode: str, events: int, *, batch_size: int, teams: int, tag: str
           ) -> tuple[list[bytes], int]:
    """The request bodies of a mode and the Kafka messages they make."""
    at = (datetime.now(UTC) - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    made = [_event(n, f"team-{n % teams}", at) | {"id": f"{tag}-{n}"} for n in range(events)]
    if mode == "single":
        return [json.dumps(event).encode() for event in made], len(made)
    chunks = [made[start:start + batch_size] for start in range(0, len(made), batch_size)]
    messages = sum(len({str(event["subject"]) for event in chunk}) for chunk in chunks)
    return [json.dumps(chunk).encode() for chunk in chunks], messages


async def post_all(base: str, mode: str, payloads: Sequence[bytes], concurrency: int, *,
                   expect: int = 200) -> float:
    """Post every body from `concurrency` tasks; the seconds it took. Any answer but
    `expect` fails the bench (mode "refused": a content type answered 415 before parsing)."""
    headers = {"Authorization": f"Bearer {TOKEN}",
               "Content-Type": TYPES.get(mode, "text/plain")}
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for payload in payloads:
        queue.put_nowait(payload)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits,
                                 timeout=60) as client:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                answer = await client.post("/v1/events", content=body)
                if answer.status_code != expect:
                    raise BenchError(f"{answer.status_code}: {answer.text[:300]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


def _serve(root: Path, broker_url: str, topic: str, partitions: int) -> tuple[ManagedProcess,
                                                                               str]:
    root.mkdir(parents=True, exist_ok=True)
    catalog = root / "catalog.yaml"
    catalog.write_text(CATALOG)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERING_")}
    env.update({
        "METERING_BROKER_URL": broker_url, "METERING_STORE_URL": f"chdb://{root}/chdb",
        "METERING_CATALOG": str(catalog), "METERING_API_TOKENS": TOKEN,
        "METERING_EVENTS_TOPIC": topic, "METERING_PARTITIONS": str(partitions),
        "METERING_LOG_LEVEL": "warning",
    })
    process = ManagedProcess(name="metering serve",
                             argv=[sys.executable, "-m", "metering.cli", "serve", "--port",
                                   str(port)], log_path=root / "serve.log", env=env)
    process.spawn()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if not process.alive():
            raise BenchError(f"serve exited: {process.log_tail(20)}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base}/healthz").status_code == 200:
                return process, base
        time.sleep(0.1)
    process.stop()
    raise BenchError(f"serve did not answer within {START_TIMEOUT_SECONDS:g} s")


def run(args: argparse.Namespace) -> list[Result]:
    results = []
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="metering-ingest-")))
        (root / "broker").mkdir()
        broker = stack.enter_context(start_broker(root / "broker"))
        for mode in args.modes:
            tag = uuid.uuid4().hex[:8]
            topic = f"bench-ingest-{mode}-{tag}"
            ensure_topics(broker.bootstrap, [topic], partitions=args.partitions)
            events = args.events or DEFAULT_EVENTS[mode]
            payloads, messages = bodies(mode, events, batch_size=args.batch_size,
                                        teams=args.teams, tag=tag)
            process, base = _serve(root / mode, broker.url, topic, args.partitions)
            refused: tuple[float, float] | None = None
            try:
                before = cpu_seconds(process.pid)
                seconds = asyncio.run(post_all(base, mode, payloads, args.concurrency))
                cpu = cpu_seconds(process.pid) - before
                if mode == "single":  # the HTTP floor: the same requests refused with 415
                    before = cpu_seconds(process.pid)
                    floor = asyncio.run(post_all(base, "refused", payloads[:REFUSED_REQUESTS],
                                                 args.concurrency, expect=415))
                    refused = floor, cpu_seconds(process.pid) - before
            finally:
                process.stop()
            on_topic = group_lag(broker.bootstrap, group=f"bench-count-{tag}", topic=topic)
            if on_topic != messages:
                raise BenchError(f"{topic} holds {on_topic} messages, {messages} expected")
            results.append(_result(mode, events, len(payloads), args.concurrency,
                                   (seconds, cpu), messages=messages))
            if refused is not None:
                results.append(_result("refused", min(events, REFUSED_REQUESTS), 0,
                                       args.concurrency, refused, messages=0))
    return results


def _result(mode: str, events: int, requests: int, concurrency: int,
            times: tuple[float, float], *, messages: int) -> Result:
    """`times`: wall and serve CPU seconds; `requests` 0: one request per event (the
    refused floor counts requests, not events)."""
    seconds, cpu = times
    requests = requests or events
    taken = events if messages else 0
    return Result(mode=mode, events=taken, requests=requests, messages=messages,
                  concurrency=concurrency, seconds=round(seconds, 3),
                  events_per_second=round(taken / seconds),
                  requests_per_second=round(requests / seconds),
                  serve_cpu_seconds=round(cpu, 2),
                  events_per_serve_cpu_second=round(taken / cpu) if cpu > 0 else 0)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--mode", dest="modes", action="append", choices=MODES,
                        help="batch or single (repeatable; default both)")
    parser.add_argument("--events", type=_positive,
                        help=f"events per mode (default {DEFAULT_EVENTS})")
    parser.add_argument("--batch-size", type=_positive, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--concurrency", type=_positive, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--teams", type=_positive, default=DEFAULT_TEAMS)
    parser.add_argument("--partitions", type=_positive, default=DEFAULT_PARTITIONS)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    args.modes = args.modes or list(MODES)
    try:
        results = run(args)
    except (BenchError, OSError) as exc:
        print(f"bench/ingest.py: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({result.mode: asdict(result) for result in results}))
    else:
        for r in results:
            print(f"{r.mode:>7}: {r.events:,} events in {r.requests:,} requests "
                  f"({r.concurrency} concurrent) in {r.seconds:.2f} s: "
                  f"{r.events_per_second:,} events/s, {r.requests_per_second:,} requests/s; "
                  f"serve CPU {r.serve_cpu_seconds:.2f} s "
                  f"({r.events_per_serve_cpu_second:,} events per serve CPU second)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
