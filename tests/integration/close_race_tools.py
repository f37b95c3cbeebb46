"""Tools of tests/integration/test_close_races.py: a catalog of Power-plan teams with usage in
the store, `metering close` / `metering serve` processes, an outside reader of the charges
topic (confluent-kafka), and the one invariant every race must end with."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from clickhouse_driver import Client
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from aggregation import InvoiceKey, StoredInvoice, open_store
from aggregation.store import ActiveUserRow
from metering.kafka_io import ensure_topics
from metering.local.services import free_port
from tests.builders import POWER_PLAN_YAML
from tests.integration.pipeline import METERING, worker_env

TEAM_COUNT = 2_000
# Every team starts between 1 and 28 October 2026 (UTC), so as of 29 November noon each
# team has exactly two due invoices: its start date and its first anniversary in November.
FIRST_START = date(2026, 10, 1)
AS_OF = datetime(2026, 11, 29, 12, tzinfo=UTC)
AS_OF_TEXT = "2026-11-29T12:00:00Z"
GRACE = timedelta(hours=1)  # the settings' default, which the tests do not change
LEASE_SECONDS = 6  # short: a killed close blocks briefly; long enough on a loaded machine
BATCH_TEAMS = 50  # many batches per run, so a kill lands mid-run
PARTITIONS = 4
DEADLINE_SECONDS = 120.0
# Inserts per write of late users, and their pace: the race runs meanwhile.
LATE_CHUNK = 20
LATE_PAUSE_SECONDS = 0.02
# A reader of the charges topic stops after this long without a record.
IDLE_SECONDS = 1.0

# `metering close` (`metering.cli.main.main`, run with `python -c`) that stalls at one batch
# (STALL_CALL, counted from 1), either between the lease renewal that declared the batch and
# its insert (STALL_AFTER_INSERT unset: a GC pause, a descheduled VM or a slow network) or
# right after the insert returned, before the batch is published (STALL_AFTER_INSERT=1: the
# moment a SIGKILL leaves a stored batch unpublished). It writes the batch's name and keys to
# STALL_MARK (whole, by a rename), then sleeps until STALL_GO exists (at most
# STALL_MAX_SECONDS), then goes on as usual.
STALLED_CLOSE = """\
import json, os, sys, time
from pathlib import Path
from aggregation._schema import SqlStore
from metering.cli.main import main

mark, go = Path(os.environ["STALL_MARK"]), Path(os.environ["STALL_GO"])
longest = float(os.environ["STALL_MAX_SECONDS"])
at_call = int(os.environ["STALL_CALL"])
after_insert = os.environ.get("STALL_AFTER_INSERT") == "1"
original = SqlStore.add_invoices
calls = 0

def stall(invoices, batch):
    keys = [[i.team, i.invoice_date.isoformat(), i.reference] for i in invoices]
    part = mark.with_name(mark.name + ".part")
    part.write_text(json.dumps({"batch": batch, "keys": keys}))
    os.replace(part, mark)
    deadline = time.monotonic() + longest
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.02)

def add_invoices(self, invoices, *, batch=""):
    global calls
    calls += 1
    if calls == at_call and not after_insert:
        stall(invoices, batch)
    original(self, invoices, batch=batch)
    if calls == at_call and after_insert:
        stall(invoices, batch)

SqlStore.add_invoices = add_invoices
main(sys.argv[1:])
"""


@dataclass(frozen=True)
class Team:
    name: str
    start: date
    users: int  # active users written in its first period before any close


def make_teams(count: int = TEAM_COUNT) -> list[Team]:
    # Shuffled names, so that byte order (the close's batches) and start days do not align.
    rng = random.Random(count)  # noqa: S311 - test data, fixed seed
    numbers = list(range(count))
    rng.shuffle(numbers)
    return [Team(name=f"team-{number:05d}", start=FIRST_START + timedelta(days=n % 28),
                 users=n % 9)
            for n, number in enumerate(numbers)]


def catalog_text(teams: Iterable[Team]) -> str:
    lines = [POWER_PLAN_YAML, "accounts:"]
    lines += [f"  - {{team: {team.name}, plan: power, start_date: {team.start.isoformat()}, "
              "timezone: UTC}" for team in teams]
    return "\n".join(lines) + "\n"


def user_rows(team: Team, names: Sequence[str], *, source: str) -> list[ActiveUserRow]:
    """First-seen rows of `names` in the team's first period (which starts on its start)."""
    at = datetime.combine(team.start, datetime.min.time(), UTC) + timedelta(hours=9)
    return [ActiveUserRow(team.name, team.start, name, at + timedelta(minutes=n),
                          f"{source}-{team.name}-{name}", source, "login")
            for n, name in enumerate(names)]


def billing_dates_due(team: Team, as_of: datetime) -> list[date]:
    """The team's billing dates (UTC, anchor day <= 28) whose midnight plus grace is at or
    before `as_of`: computed here, not by the product."""
    due: list[date] = []
    year, month = team.start.year, team.start.month
    while True:
        day = date(year, month, team.start.day)
        if datetime.combine(day, datetime.min.time(), UTC) + GRACE > as_of:
            return due
        due.append(day)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


def expected_keys(teams: Iterable[Team], as_of: datetime) -> set[InvoiceKey]:
    return {InvoiceKey(team.name, day, "") for team in teams
            for day in billing_dates_due(team, as_of)}


@dataclass
class Race:
    """One test's own database, charges topic, catalog and environment on the shared (or a
    test's own) ClickHouse server and broker."""

    tmp: Path
    teams: list[Team]
    host: str
    tcp_port: int
    database: str
    bootstrap: str
    topic: str
    env: dict[str, str]
    processes: list[Closer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"clickhouse://{self.host}:{self.tcp_port}/{self.database}"

    def sql(self, query: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        client = Client(host=self.host, port=self.tcp_port, connect_timeout=5,
                        send_receive_timeout=30)
        try:
            rows: list[tuple[Any, ...]] = client.execute(query, params)
            return rows
        finally:
            client.disconnect()

    def count(self, table: str) -> int:
        """Rows of `table` (one of the store's) on the server, whatever their merge state."""
        # names made by this module (races_ + hex), not input
        return int(self.sql(f"SELECT count() FROM {self.database}.{table}")[0][0])  # noqa: S608

    def stored_count(self) -> int:
        """Invoice rows in the store (a row written twice counts twice)."""
        return self.count("invoices")

    def stored(self) -> dict[InvoiceKey, str]:
        store = open_store(self.url)
        try:
            return {invoice.key: invoice.body for invoice in store.invoices()}
        finally:
            store.close()

    def add_users(self, rows: Sequence[ActiveUserRow]) -> None:
        store = open_store(self.url)
        try:
            store.add_active_users(rows)
        finally:
            store.close()

    def close(self, name: str, *, as_of: str = AS_OF_TEXT, **settings: str) -> Closer:
        """Start `metering close --as-of AS_OF --json`, its output in files."""
        closer = Closer.start(name=name, tmp=self.tmp,
                              argv=[METERING, "close", "--as-of", as_of, "--json"],
                              env={**self.env, **_env(settings)})
        self.processes.append(closer)
        return closer

    def stalled_close(self, name: str, *, call: int = 2, after_insert: bool = False) -> Stall:
        """Start STALLED_CLOSE as `metering close --as-of AS_OF --json`, stalling at batch
        `call` before its insert (or after it, before its publication)."""
        mark, go = self.tmp / f"{name}.mark", self.tmp / f"{name}.go"
        closer = Closer.start(
            name=name, tmp=self.tmp,
            argv=[sys.executable, "-c", STALLED_CLOSE, "close", "--as-of", AS_OF_TEXT, "--json"],
            env={**self.env, "STALL_MARK": str(mark), "STALL_GO": str(go),
                 "STALL_MAX_SECONDS": str(DEADLINE_SECONDS), "STALL_CALL": str(call),
                 "STALL_AFTER_INSERT": "1" if after_insert else "0"})
        self.processes.append(closer)
        return Stall(mark=mark, go=go, closer=closer)

    def serve(self, name: str, **settings: str) -> Serving:
        port = free_port()
        closer = Closer.start(name=name, tmp=self.tmp, argv=[METERING, "serve"], env={
            **self.env, "METERING_API_HOST": "127.0.0.1", "METERING_API_PORT": str(port),
            "METERING_API_TOKENS": "races-token", "METERING_LOG_LEVEL": "info",
            **_env(settings)})
        self.processes.append(closer)
        return Serving(closer, f"http://127.0.0.1:{port}")

    def stop_all(self) -> None:
        for process in self.processes:
            process.kill()


def _env(settings: dict[str, str]) -> dict[str, str]:
    return {f"METERING_{key.upper()}": value for key, value in settings.items()}


def new_race(*, tmp: Path, tcp_port: int, bootstrap: str, broker_url: str,
             teams: list[Team] | None = None) -> Race:
    """A fresh database with the teams' usage and a fresh charges topic."""
    teams = make_teams() if teams is None else teams
    tag = uuid.uuid4().hex[:8]
    catalog = tmp / "catalog.yaml"
    catalog.write_text(catalog_text(teams), encoding="utf-8")
    topic = f"races-{tag}-charges"
    # Created here, so each close finds it and the reader can count it from the start.
    ensure_topics(bootstrap, [topic], partitions=PARTITIONS)
    env = worker_env(broker_url=broker_url, catalog=str(catalog), charges_topic=topic,
                     partitions=str(PARTITIONS), close_lease_seconds=str(LEASE_SECONDS),
                     close_batch_teams=str(BATCH_TEAMS), close_lease_wait_seconds="90")
    race = Race(tmp=tmp, teams=teams, host="127.0.0.1", tcp_port=tcp_port,
                database=f"races_{tag}", bootstrap=bootstrap, topic=topic, env=env)
    race.env["METERING_STORE_URL"] = race.url
    store = open_store(race.url)
    try:
        store.ensure_schema()
        store.add_active_users([row for team in teams for row in user_rows(
            team, [f"u{n}" for n in range(team.users)], source="timeclock")])
    finally:
        store.close()
    return race


@dataclass
class Closer:
    """A `metering` process with stdout and stderr in files (a pipe nobody reads would fill
    with 4,000 invoices and stall it)."""

    name: str
    process: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path

    @classmethod
    def start(cls, *, name: str, tmp: Path, argv: list[str], env: dict[str, str]) -> Closer:
        out_path, err_path = tmp / f"{name}.stdout", tmp / f"{name}.stderr"
        with out_path.open("wb") as out, err_path.open("wb") as err:
            process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        return cls(name, process, out_path, err_path)

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float = DEADLINE_SECONDS) -> int:
        """The exit code; the test fails (and the process is killed) after `timeout`."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.name} still ran after {timeout:.0f}s; stderr: "
                        f"{self.stderr[-3000:]}")

    def kill(self) -> None:
        """SIGKILL by PID, if it still runs."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def terminate(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
        return self.wait(timeout)

    def describe(self) -> str:
        return f"{self.name}: exit {self.process.poll()}; stderr: {self.stderr[-3000:]}"


@dataclass(frozen=True)
class Held:
    """The batch a stalled close holds back: its name and keys."""

    batch: str
    keys: frozenset[InvoiceKey]


@dataclass
class Stall:
    """A STALLED_CLOSE process and the files it is steered by."""

    mark: Path
    go: Path
    closer: Closer

    def wait_held(self) -> Held:
        """Wait until the close stalls (the test fails if it ends first), then what it holds."""
        wait_for("the close stalling at its batch",
                 lambda: not self.closer.alive() or self.mark.exists(),
                 diagnose=self.closer.describe)
        assert self.mark.exists(), f"the close ended without stalling; {self.closer.describe()}"
        document = json.loads(self.mark.read_text())
        return Held(batch=document["batch"], keys=frozenset(
            InvoiceKey(team, date.fromisoformat(day), reference)
            for team, day, reference in document["keys"]))

    def release(self) -> None:
        self.go.touch()


def succeeded(*closers: Closer) -> None:
    """Wait for each; fail naming every one that did not exit 0."""
    codes = [closer.wait() for closer in closers]
    failed = [closer.describe() for closer, code in zip(closers, codes, strict=True) if code]
    assert not failed, " || ".join(failed)
    for closer in closers:
        assert "Traceback" not in closer.stderr, closer.describe()


@dataclass
class Serving:
    closer: Closer
    base: str

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def metric(self, sample: str) -> float:
        """A sample of serve's /metrics, named with its labels as exposed; the test fails if
        serve does not answer or has no such sample."""
        try:
            text = httpx.get(f"{self.base}/metrics", timeout=5).text
        except httpx.TransportError as exc:
            pytest.fail(f"serve's /metrics did not answer ({exc}); {self.closer.describe()}")
        for line in text.splitlines():
            name, _, value = line.rpartition(" ")
            if name == sample:
                return float(value)
        pytest.fail(f"no sample {sample} in serve's /metrics: {text[:3000]}")


def wait_for(what: str, probe: Callable[[], bool], *, diagnose: Callable[[], str],
             timeout: float = DEADLINE_SECONDS, pause: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not seen within {timeout:.0f}s; {diagnose()}")
        time.sleep(pause)


# The outside reader of the charges topic.

Charge = tuple[bytes | None, bytes]


def _consumer(bootstrap: str) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": f"races-{uuid.uuid4().hex}",
                     "enable.auto.commit": False, "auto.offset.reset": "earliest",
                     "log_level": 3})


def consume_charges(bootstrap: str, topic: str, *,
                    timeout: float = DEADLINE_SECONDS) -> list[Charge]:
    """Every record of `topic` from the beginning: up to the partitions' high watermarks,
    then on until none came for IDLE_SECONDS.

    tansu answers ListOffsets(latest) with the base offset of a partition's last record batch
    plus one, not the end (30 records in three batches of 10 give 21): a reader that stopped
    at the watermarks would miss most of each last batch. The rest of that batch comes in
    the fetch that reaches the watermark, so a short idle wait after it finds the end."""
    consumer = _consumer(bootstrap)
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in metadata.topics[topic].partitions}
        wanted = {p: end for p, end in ends.items() if end > 0}
        if not wanted:
            return []
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in wanted])
        reached = dict.fromkeys(wanted, 0)
        records: list[Charge] = []
        deadline = time.monotonic() + timeout
        idle_since = time.monotonic()
        while (any(reached[p] < end for p, end in wanted.items())
               or time.monotonic() - idle_since < IDLE_SECONDS):
            if time.monotonic() > deadline:
                pytest.fail(f"read {reached} of at least {wanted} records of {topic} "
                            f"in {timeout:.0f}s")
            messages = consumer.consume(num_messages=1000, timeout=0.2)
            for message in messages:
                if message.error() is not None:
                    raise KafkaException(message.error())
                partition, offset, value = message.partition(), message.offset(), message.value()
                assert partition is not None and offset is not None and value is not None
                records.append((message.key(), value))
                reached[partition] = max(reached[partition], offset + 1)
            if messages:
                idle_since = time.monotonic()
        return records
    finally:
        consumer.close()


def charge_key(value: bytes) -> InvoiceKey:
    """The key a charge names (`reference` is absent from the JSON when "")."""
    document = json.loads(value)
    return InvoiceKey(document["team"], date.fromisoformat(document["invoice_date"]),
                      document.get("reference", ""))


@dataclass(frozen=True)
class Outcome:
    stored: dict[InvoiceKey, str]
    charges: int  # records on the topic, re-publications included


def two_bodies(race: Race) -> list[tuple[Any, ...]]:
    """(team, invoice_date, reference, bodies) of each key holding more than one body among
    the server's raw invoice rows, void batches' rows included."""
    return race.sql(
        "SELECT team, invoice_date, reference, uniqExact(body) AS n "  # noqa: S608 - our name
        f"FROM {race.database}.invoices "
        "GROUP BY team, invoice_date, reference HAVING n > 1")


def assert_invariant(race: Race, expected: set[InvoiceKey], *,
                     raw_bodies: bool = True) -> Outcome:
    """One key, one invoice; every charge its stored bytes; nothing unpublished.

    Reads the store as the product does (one invoice per key), then the server's raw rows
    (no key may hold two bodies, whichever a read would pick; skipped with `raw_bodies=False`
    while rows of a void batch may still be there, as they may until a close purges them),
    then the whole charges topic: each charge's bytes must be the stored body of the key it
    names, every stored invoice must be published at least once, and no key may be
    published with two bodies."""
    store = open_store(race.url)
    try:
        invoices: list[StoredInvoice] = store.invoices()
    finally:
        store.close()
    stored = {invoice.key: invoice.body for invoice in invoices}
    assert len(stored) == len(invoices), "the store returned a key twice"
    missing, extra = expected - stored.keys(), stored.keys() - expected
    assert not missing and not extra, (
        f"{len(missing)} expected keys not stored (e.g. {sorted(missing)[:3]}); "
        f"{len(extra)} unexpected keys stored (e.g. {sorted(extra)[:3]})")

    if raw_bodies:
        doubled = two_bodies(race)
        assert doubled == [], f"{len(doubled)} keys hold two bodies: {doubled[:5]}"

    charges = consume_charges(race.bootstrap, race.topic)
    published: dict[InvoiceKey, set[bytes]] = {}
    for key_bytes, value in charges:
        key = charge_key(value)
        assert key_bytes == key.team.encode(), f"charge of {key} keyed {key_bytes!r}"
        published.setdefault(key, set()).add(value)
    unknown = published.keys() - stored.keys()
    assert not unknown, f"{len(unknown)} charges name no stored invoice: {sorted(unknown)[:3]}"
    twice = {key: bodies for key, bodies in published.items() if len(bodies) > 1}
    assert not twice, f"{len(twice)} keys published with two bodies: {list(twice.items())[:2]}"
    differing = [key for key, bodies in published.items()
                 if bodies != {stored[key].encode()}]
    assert not differing, (f"{len(differing)} charges differ from the stored body, e.g. "
                           f"{differing[0]}: {published[differing[0]]!r} vs "
                           f"{stored[differing[0]]!r}")
    unpublished = stored.keys() - published.keys()
    assert not unpublished, (f"{len(unpublished)} stored invoices never published, e.g. "
                             f"{sorted(unpublished)[:3]}")
    return Outcome(stored=stored, charges=len(charges))


def duplicates(charges: Iterable[Charge]) -> Counter[InvoiceKey]:
    """How many times each re-published key was published."""
    counts = Counter(charge_key(value) for _, value in charges)
    return Counter({key: n for key, n in counts.items() if n > 1})


class LateUsers:
    """Adds new active users to random teams' first periods from a thread until stopped: the
    late events a worker would write while closes run."""

    def __init__(self, race: Race, teams: Sequence[Team], *, seed: int) -> None:
        self.race, self.teams = race, list(teams)
        self._rng = random.Random(seed)  # noqa: S311 - test data, fixed seed
        self._stop = threading.Event()
        self.written: list[ActiveUserRow] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="late-users", daemon=True)

    def __enter__(self) -> LateUsers:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _run(self) -> None:
        store = open_store(self.race.url)
        try:
            n = 0
            while not self._stop.is_set():
                rows = []
                for _ in range(LATE_CHUNK):
                    team = self._rng.choice(self.teams)
                    rows += user_rows(team, [f"late{n}"], source="late")
                    n += 1
                store.add_active_users(rows)
                self.written += rows
                self._stop.wait(LATE_PAUSE_SECONDS)
        except BaseException as exc:  # noqa: BLE001 - reported by stop(), in the test
            self.error = exc
        finally:
            store.close()

    def stop(self) -> list[ActiveUserRow]:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "the late-users thread did not stop"
        assert self.error is None, f"writing late users failed: {self.error!r}"
        return self.written
