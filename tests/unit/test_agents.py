"""The two agents as `create_app` registers them, run by Faust's `agent.test_context()`:
messages go through an in-memory channel, rows into a MemoryStore, and rejections are
captured at the rejected topics' `send`. No broker, no ClickHouse: the broker URL names a
listening port that must see no connection."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP
from prometheus_client import CollectorRegistry

from aggregation import (
    ActiveUserRow,
    DailyUsage,
    EventRow,
    MemoryStore,
    StoredInvoice,
    StoreError,
)
from metering.settings import Settings
from metering.stream import MeteringApp, create_app
from metering.stream.timers import refresh_top_teams
from schemas.catalog import Catalog
from schemas.changes import BillingChange
from schemas.payments import PaymentEvent
from schemas.periods import DEFAULT_CALENDAR
from schemas.wire import Rejection
from tests.builders import change_wire, cloud_event

TEAM = "acme"
EVENTS_TOPIC = "activity-events"
# Recent enough to be neither in the future nor late for its period.
AT = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
PERIOD = DEFAULT_CALENDAR.period_containing(AT).start


@dataclass(frozen=True)
class Sent:
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]


@dataclass
class Worker:
    """An app from create_app, its store and registry, and what it sent to rejected topics."""

    app: MeteringApp
    store: MemoryStore
    registry: CollectorRegistry
    rejected: list[Sent] = field(default_factory=list)
    changes_rejected: list[Sent] = field(default_factory=list)

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


class FlakyStore(MemoryStore):
    """Refuses the first event write, as a store that is briefly down."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = 0

    def add_events(self, rows: Sequence[EventRow]) -> None:
        if not self.refused:
            self.refused += 1
            raise StoreError("store down")
        super().add_events(rows)


def refuse_marked(change: BillingChange, *, raw: bytes, stored: Sequence[BillingChange],
                  issued: Sequence[StoredInvoice], payments: Sequence[PaymentEvent] = ()
                  ) -> Rejection | None:
    """The injected billing rule: refuses changes whose id says so."""
    if change.id.startswith("refuse"):
        return Rejection("refused", f"{change.id} is refused", raw)
    return None


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def top_teams() -> int:
    """METERING_TOP_TEAMS_METRIC: off unless a test says otherwise."""
    return 0


@pytest.fixture
async def worker(
    unused_broker: int, store: MemoryStore, top_teams: int, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Worker]:
    settings = Settings(broker_url=f"kafka://127.0.0.1:{unused_broker}", work_dir=tmp_path,
                        batch_linger_seconds=0.01, top_teams_metric=top_teams)
    store.ensure_schema()
    registry = CollectorRegistry()
    app = create_app(settings, store=store, catalog=Catalog(), check_change=refuse_marked,
                     check_payment=lambda payment, *, raw, invoice: None, registry=registry)
    running = Worker(app=app, store=store, registry=registry)
    context = app.stream_context
    capture(monkeypatch, context.rejected_topic, running.rejected)
    capture(monkeypatch, context.changes_rejected_topic, running.changes_rejected)
    yield running
    context.executor.shutdown()
    # A stream builds the app's consumer, whose thread (never started here) already has its
    # own event loop: closed here, or it warns when collected, in whichever test runs then.
    consumer: Any = app.consumer  # Faust's aiokafka consumer, beyond ConsumerT
    consumer._thread.thread_loop.close()


def capture(monkeypatch: pytest.MonkeyPatch, topic: Any, sent: list[Sent]) -> None:
    """Record the topic's sends instead of producing; each is delivered at once."""

    async def send(*, key: bytes | None, value: bytes, headers: dict[str, bytes],
                   force: bool) -> asyncio.Future[None]:
        sent.append(Sent(key, value, headers))
        delivered = asyncio.get_running_loop().create_future()
        delivered.set_result(None)
        return delivered

    monkeypatch.setattr(topic, "send", send)


def event(event_id: str, user: str, *, kind: str = "login") -> dict[str, Any]:
    return cloud_event(event_id, TEAM, user, AT, source="web", kind=kind)


def reasons(sent: list[Sent]) -> list[str]:
    return [message.headers["reason"].decode() for message in sent]


# --- count_active_users -----------------------------------------------------------------


async def test_activity_agent_writes_rows_and_sends_rejections(worker: Worker) -> None:
    both = json.dumps([event("e1", "ann"), event("e2", "bob"), event("e1", "ann")]).encode()
    malformed = b'{"specversion": "1.0", '
    agent = worker.app.agents["count_active_users"]
    async with agent.test_context() as test_agent:
        await test_agent.put(both, key=TEAM.encode())  # each put waits for its batch
        await test_agent.put(malformed, key=TEAM.encode())

    assert worker.store.active_users(TEAM, PERIOD) == [
        ActiveUserRow(TEAM, PERIOD, "ann", AT, "e1", "web", "login"),
        ActiveUserRow(TEAM, PERIOD, "bob", AT, "e2", "web", "login"),
    ]
    assert worker.store.daily_usage(TEAM, PERIOD) == [DailyUsage(AT.date(), "login", 2, 2)]
    assert [(sent.key, sent.value) for sent in worker.rejected] == [(TEAM.encode(), malformed)]
    assert reasons(worker.rejected) == ["invalid_json"]
    assert worker.rejected[0].headers["detail"]
    assert {name: worker.metric(name) for name in (
        "metering_messages_total", "metering_events_received_total",
        "metering_events_duplicate_total", "metering_event_rows_written_total",
        "metering_active_user_rows_written_total", "metering_store_up",
        "metering_dedupe_keys", "metering_dedupe_window_ids",
    )} == {
        "metering_messages_total": 2, "metering_events_received_total": 3,
        "metering_events_duplicate_total": 1, "metering_event_rows_written_total": 2,
        "metering_active_user_rows_written_total": 2, "metering_store_up": 1,
        "metering_dedupe_keys": 2, "metering_dedupe_window_ids": 2,
    }
    assert worker.metric("metering_events_rejected_total", reason="invalid_json") == 1
    # Both messages finished: the lag is measured from the offset after the second.
    assert worker.app.stream_context.finished == {TP(EVENTS_TOPIC, 0): 2}
    # The ledger: one row per message, team and period, written with the batch's rows.
    assert [tuple(count)[2:] for count in worker.store.ledger(TEAM, TEAM)] == [
        (1, 3, 3, 1, 2, 0, 0, "")]
    (unnamed,) = worker.store.ledger("", "")  # the malformed message names no team
    assert tuple(unnamed)[2:] == (1, 1, 0, 0, 0, 0, 1, "invalid_json=1")


async def test_activity_agent_writes_nothing_new_for_a_redelivered_message(
    worker: Worker,
) -> None:
    both = json.dumps([event("e1", "ann"), event("e2", "bob")]).encode()
    agent = worker.app.agents["count_active_users"]
    async with agent.test_context() as test_agent:
        await test_agent.put(both, key=TEAM.encode())
        await test_agent.put(both, key=TEAM.encode())
    assert worker.store.mau(TEAM, PERIOD) == 2
    assert worker.metric("metering_event_rows_written_total") == 2
    assert worker.metric("metering_events_duplicate_total") == 2
    assert worker.rejected == []


async def test_hostile_members_cost_nothing_but_themselves(worker: Worker) -> None:
    """The hostile pass through the worker: a good event beside a 3,000-deep member counts;
    one user sent composed and decomposed counts once; a repeated key and a subject that is
    not a team id are rejected with their reasons, each as its own bytes."""
    deep = b"[" * 3000 + b"]" * 3000
    twice = json.dumps(event("e3", "cy")).replace('"id": "e3"', '"id": "e3", "id": "e4"')
    not_a_team = cloud_event("e5", "acme/../other", "dee", AT, source="web", kind="login")
    batch = (b"[" + json.dumps(event("e1", "zo\u00eb")).encode() + b", " + deep + b", "
             + twice.encode() + b", " + json.dumps(not_a_team).encode() + b"]")
    decomposed = json.dumps(event("e2", "zoe\u0308")).encode()
    agent = worker.app.agents["count_active_users"]
    async with agent.test_context() as test_agent:
        await test_agent.put(batch, key=TEAM.encode())
        await test_agent.put(decomposed, key=TEAM.encode())
    assert [(row.user_id, row.event_id) for row in worker.store.active_users(TEAM, PERIOD)] == [
        ("zo\u00eb", "e1")]
    assert worker.store.mau(TEAM, PERIOD) == 1
    assert reasons(worker.rejected) == ["invalid_json", "invalid_json", "invalid_event"]
    assert [sent.value for sent in worker.rejected[:2]] == [deep, twice.encode()]


def binary_mode(structured: dict[str, Any]) -> tuple[bytes, list[tuple[str, bytes]]]:
    """CloudEvents' Kafka binary mode of an event: the data as value, attributes as headers."""
    headers = [(f"ce_{name}", str(value).encode()) for name, value in structured.items()
               if name != "data"]
    return json.dumps(structured["data"]).encode(), [*headers, ("content-type",
                                                                b"application/json")]


async def test_activity_agent_reads_kafka_binary_mode(worker: Worker) -> None:
    agent = worker.app.agents["count_active_users"]
    value, headers = binary_mode(event("e1", "ann"))
    no_id = [(name, raw) for name, raw in headers if name != "ce_id"]
    async with agent.test_context() as test_agent:
        await test_agent.put(value, key=TEAM.encode(), headers=headers)
        await test_agent.put(value, key=TEAM.encode(), headers=headers)  # a repeat
        await test_agent.put(json.dumps(event("e2", "bob")).encode(), key=TEAM.encode(),
                             headers=[("trace", b"x")])  # structured, other headers
        await test_agent.put(value, key=TEAM.encode(), headers=no_id)
    assert worker.store.mau(TEAM, PERIOD) == 2
    assert sum(day.events for day in worker.store.daily_usage(TEAM, PERIOD)) == 2
    assert reasons(worker.rejected) == ["missing_field"]
    assert json.loads(worker.rejected[0].value)["data"] == {"user_id": "ann"}


@pytest.mark.parametrize("store", [FlakyStore()], ids=["flaky"])
async def test_activity_agent_retries_a_failed_write_before_finishing(
    worker: Worker, store: FlakyStore,
) -> None:
    agent = worker.app.agents["count_active_users"]
    async with agent.test_context() as test_agent:
        await test_agent.put(json.dumps(event("e1", "ann")).encode(), key=TEAM.encode())
    assert store.refused == 1
    assert worker.store.mau(TEAM, PERIOD) == 1
    assert worker.metric("metering_store_write_retries_total") == 1
    assert worker.metric("metering_store_up") == 1
    assert worker.app.stream_context.finished == {TP(EVENTS_TOPIC, 0): 1}


async def test_a_revocation_forgets_where_partitions_were(worker: Worker) -> None:
    agent = worker.app.agents["count_active_users"]
    async with agent.test_context() as test_agent:
        await test_agent.put(json.dumps(event("e1", "ann")).encode(), key=TEAM.encode())
    assert worker.app.stream_context.finished == {TP(EVENTS_TOPIC, 0): 1}
    await worker.app.on_partitions_revoked.send({TP(EVENTS_TOPIC, 0)})
    assert worker.app.stream_context.finished == {}


@pytest.mark.parametrize("top_teams", [1])
async def test_top_teams_timer_publishes_the_stored_mau_of_the_largest_teams(
    worker: Worker,
) -> None:
    agent = worker.app.agents["count_active_users"]
    other = {**event("e3", "cat"), "subject": "globex"}
    async with agent.test_context() as test_agent:
        await test_agent.put(json.dumps([event("e1", "ann"), event("e2", "bob"), other]
                                        ).encode(), key=TEAM.encode())
    await refresh_top_teams(worker.app)
    assert worker.metric("metering_team_mau", team=TEAM) == 2
    assert worker.metric("metering_team_mau", team="globex") is None


# --- record_billing_changes -------------------------------------------------------------


def change(ident: str) -> bytes:
    return change_wire(TEAM, ident, "2023-12-01T09:00:00Z", "add_units", count=10)


async def test_change_agent_stores_a_change_once_however_often_it_arrives(
    worker: Worker,
) -> None:
    agent = worker.app.agents["record_billing_changes"]
    async with agent.test_context() as test_agent:
        await test_agent.put(change("s1"), key=TEAM.encode())
        await test_agent.put(change("s1"), key=TEAM.encode())
    assert [stored.change_id for stored in worker.store.changes(TEAM)] == ["s1"]
    assert worker.metric("metering_changes_received_total") == 2
    assert worker.metric("metering_changes_stored_total") == 1
    assert worker.metric("metering_changes_duplicate_total") == 1
    assert worker.changes_rejected == []


async def test_change_agent_rejects_invalid_json_and_keeps_going(worker: Worker) -> None:
    deep = b"[" * 5000
    agent = worker.app.agents["record_billing_changes"]
    async with agent.test_context() as test_agent:
        await test_agent.put(deep, key=TEAM.encode())
        await test_agent.put(change("s2"), key=TEAM.encode())
    assert [(sent.key, sent.value) for sent in worker.changes_rejected] == [
        (TEAM.encode(), deep)]
    assert reasons(worker.changes_rejected) == ["invalid_json"]
    assert [stored.change_id for stored in worker.store.changes(TEAM)] == ["s2"]
    assert worker.metric("metering_changes_rejected_total", reason="invalid_json") == 1
    assert worker.rejected == []


async def test_change_agent_rejects_what_the_injected_check_refuses(worker: Worker) -> None:
    agent = worker.app.agents["record_billing_changes"]
    async with agent.test_context() as test_agent:
        await test_agent.put(change("refuse-1"), key=TEAM.encode())
    assert reasons(worker.changes_rejected) == ["refused"]
    assert worker.changes_rejected[0].headers["detail"] == b"refuse-1 is refused"
    assert worker.changes_rejected[0].value == change("refuse-1")
    assert worker.store.changes(TEAM) == []
    assert worker.metric("metering_changes_rejected_total", reason="refused") == 1
