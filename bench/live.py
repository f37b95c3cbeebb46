"""The paced live stream and the arrival times of its latency markers.

Every `sample_every`-th live event is a marker: a user of its own (`probe-NNNNNN`) in the
team the stream drew, so its first-seen row is new. The time it is handed to the producer
(or emitter) is taken just before the hand-off, on this process's clocks.

With a ClickHouse server, `MarkerWatch` polls the store every `POLL_SECONDS` (50 ms) from a
thread of this process, asking only for the markers sent and not yet seen (pruned by their
teams, the table's leading sort key), and keeps, per marker, the end of the first poll that
returned it. A row is visible once the worker's insert returns, so the marker's row arrived
after the start of the poll before (which did not return it, or after the send if later)
and no later than the end of that poll: the latency reported is that end minus the send,
an upper bound at most one poll interval plus two query durations above the true value;
`resolution` gives the widest such interval of the run.

chdb cannot be polled while the worker runs (one engine per process, bound to the path), so
with chdb the marker rows' `inserted_at` (the engine's `now()` at insert, whole seconds) is
read after the worker has stopped: the row was inserted before `inserted_at + 1 s`, so that
minus the wall-clock send time is an upper bound with 1 s resolution.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date

from baseline import BenchError
from clickhouse_driver import Client
from clickhouse_driver import errors as clickhouse_errors
from stores import MARKER_PREFIX
from workload import Stream, encode

from metering.kafka_io import make_producer
from metering.local import LocalClickHouse
from metering.producer import BatchingEmitter

POLL_SECONDS = 0.05
INSERTED_AT_RESOLUTION_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Marker:
    team: int
    sent_wall: float  # time.time(), to compare with the store's clock (inserted_at)
    sent: float  # time.perf_counter(), to compare with the poller's arrivals


@dataclass(frozen=True, slots=True)
class Arrival:
    seen: float  # perf_counter at the end of the first poll that returned the marker
    after: float  # perf_counter at the start of the poll before it


class MarkerWatch:
    """Polls the server store every `POLL_SECONDS` for the markers not yet seen."""

    def __init__(
        self, server: LocalClickHouse, database: str, period_start: date,
        *, settings: Mapping[str, str | int] | None = None,
    ) -> None:
        self._client = Client(host="127.0.0.1", port=server.tcp_port, send_receive_timeout=30,
                              settings=dict(settings or {}))
        self._sql = (f"SELECT DISTINCT user_id FROM {database}.active_users "  # noqa: S608
                     "WHERE team IN %(teams)s AND period_start = %(period_start)s "
                     "AND user_id IN %(users)s")
        self._period_start = period_start
        self._lock = threading.Lock()
        self._pending: dict[str, str] = {}  # marker user -> team name
        self.arrivals: dict[str, Arrival] = {}
        self.polls = 0
        self.query_seconds = 0.0
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="marker-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def sent(self, user: str, team: str) -> None:
        with self._lock:
            self._pending[user] = team

    def _poll(self, pending: dict[str, str]) -> list[str]:
        rows = self._client.execute(self._sql, {
            "teams": tuple(set(pending.values())), "users": tuple(pending),
            "period_start": self._period_start,
        })
        return [str(row[0]) for row in rows]

    def _run(self) -> None:
        before = time.perf_counter()
        try:
            while not self._stop.is_set():
                started = time.perf_counter()
                with self._lock:
                    pending = dict(self._pending)
                if pending:
                    found = self._poll(pending)
                    ended = time.perf_counter()
                    self.polls += 1
                    self.query_seconds += ended - started
                    with self._lock:
                        for user in found:
                            if self._pending.pop(user, None) is not None:
                                self.arrivals[user] = Arrival(ended, before)
                before = started
                self._stop.wait(max(0.0, started + POLL_SECONDS - time.perf_counter()))
        except (clickhouse_errors.Error, OSError, EOFError) as exc:
            self._error = exc

    def finish(self, timeout: float) -> dict[str, Arrival]:
        """Wait up to `timeout` for every marker sent to be seen, then stop polling."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._thread.is_alive():
            with self._lock:
                if not self._pending:
                    break
            time.sleep(POLL_SECONDS)
        self.close()
        if self._error is not None:
            raise BenchError(f"polling the store for markers: {self._error}")
        return dict(self.arrivals)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        self._client.disconnect()


@dataclass(frozen=True, slots=True)
class LiveRun:
    target_rate: float
    rate: float  # achieved: the bench's producer may not keep up with the target
    seconds: float
    events: int
    messages: int
    markers: dict[str, Marker]
    users: set[str]


def run_live(
    bootstrap: str, topic: str, stream: Stream, *, mode: str, rate: float, seconds: float,
    sample_every: int, on_marker: Callable[[str, str], None] | None = None,
) -> LiveRun:
    """Produce new events at `rate` for `seconds`; every `sample_every`-th is a marker, and
    `on_marker(user, team)` is called just before it is handed over."""
    population = stream.population
    names = population.team_names
    total = max(sample_every, round(rate * seconds))
    markers: dict[str, Marker] = {}
    users: set[str] = set()
    producer = make_producer(bootstrap)
    try:
        emitter = BatchingEmitter(producer, topic) if mode == "batch" else None
        try:
            started = time.perf_counter()
            for n in range(total):
                due = started + n / rate
                ahead = due - time.perf_counter()
                if ahead > 0.001:
                    time.sleep(ahead)
                marker = f"{MARKER_PREFIX}{len(markers):06d}" if n % sample_every == 0 else None
                raw = stream.next(user=marker)
                event = population.event(raw)
                if marker is not None:
                    if on_marker is not None:
                        on_marker(marker, names[raw[0]])
                    markers[marker] = Marker(raw[0], time.time(), time.perf_counter())
                else:
                    users.add(raw[1])
                if emitter is not None:
                    emitter.emit(event)
                else:
                    producer.send(topic, key=names[raw[0]].encode(), value=encode(event))
            elapsed = time.perf_counter() - started
        finally:
            if emitter is not None:
                emitter.close()  # sends what is left and waits for every acknowledgement
        producer.flush()
        messages = total if emitter is None else emitter.sent_messages
    finally:
        producer.close()
    return LiveRun(rate, total / elapsed, elapsed, total, messages, markers, users)
