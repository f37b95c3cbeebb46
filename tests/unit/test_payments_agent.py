"""The billing-payments agent as `create_app` registers it (injected with invoicing's payment
rule on the catalog, as `metering worker` does), run by Faust's `agent.test_context()`:
messages go through an in-memory channel, outcomes into a MemoryStore holding seed 001's
August invoice ($66.00), and rejections are captured at the rejected topic's `send`. No
broker, no ClickHouse."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from aggregation import MemoryStore, StoredPayment, StoreError
from invoicing import check_payment
from metering.settings import Settings
from metering.stream import MeteringApp, create_app
from tests.builders import account, catalog
from tests.unit.test_agents import Sent, capture, reasons
from tests.unit.test_payments import INVOICE, TEAM, charge, decoded, payment_wire, stored

CATALOG = catalog(account(TEAM, "2026-07-04"))


@dataclass
class Worker:
    app: MeteringApp
    store: MemoryStore
    registry: CollectorRegistry
    rejected: list[Sent] = field(default_factory=list)

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def stored(self) -> list[tuple[str, str]]:
        return [(p.payment_id, p.payment().type) for p in self.store.payments(TEAM)]


class FlakyStore(MemoryStore):
    """Refuses the first payment write, as a store that is briefly down."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = 0

    def add_payments(self, payments: Sequence[StoredPayment]) -> None:
        if not self.refused:
            self.refused += 1
            raise StoreError("store down")
        super().add_payments(payments)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def worker(unused_broker: int, store: MemoryStore, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Worker]:
    settings = Settings(broker_url=f"kafka://127.0.0.1:{unused_broker}", work_dir=tmp_path)
    store.ensure_schema()
    store.add_invoices([stored(INVOICE)], batch="close-1")
    registry = CollectorRegistry()
    app = create_app(settings, store=store, catalog=CATALOG,
                     check_change=lambda change, *, raw, stored, issued: None,
                     check_payment=functools.partial(check_payment, catalog=CATALOG),
                     registry=registry)
    running = Worker(app=app, store=store, registry=registry)
    context = app.stream_context
    capture(monkeypatch, context.payments_rejected_topic, running.rejected)
    yield running
    context.executor.shutdown()
    consumer: Any = app.consumer  # see tests/unit/test_agents.py: its loop is closed here
    consumer._thread.thread_loop.close()


async def put_all(worker: Worker, *messages: bytes, key: bytes = TEAM.encode()) -> None:
    agent = worker.app.agents["record_billing_payments"]
    async with agent.test_context() as test_agent:
        for message in messages:
            await test_agent.put(message, key=key)


async def test_a_failed_attempt_then_its_retry_are_stored_once_however_often_they_arrive(
    worker: Worker,
) -> None:
    failed = charge("p1", "payment_failed", failure="card_declined")
    paid = charge("p2", attempt=2)
    await put_all(worker, failed, failed, paid, paid, paid)
    assert worker.stored() == [("p1", "payment_failed"), ("p2", "payment_succeeded")]
    assert [p.payment() for p in worker.store.payments(TEAM)] == [decoded(failed), decoded(paid)]
    assert {name: worker.metric(f"metering_payments_{name}_total") for name in (
        "received", "stored", "duplicate")} == {"received": 5, "stored": 2, "duplicate": 3}
    assert worker.rejected == []


async def test_a_method_update_of_a_known_team_is_stored(worker: Worker) -> None:
    await put_all(worker, payment_wire("m1", "payment_method_updated"))
    assert worker.stored() == [("m1", "payment_method_updated")]


async def test_refused_outcomes_go_to_the_rejected_topic_with_their_reason(
    worker: Worker,
) -> None:
    bad = [
        charge("u1", invoice_date="2026-09-04"),
        charge("a1", amount="65.00"),
        charge("c1", currency="EUR"),
        charge("g1", team="ghost"),
        b'{"specversion": "1.0", ',
        payment_wire("f1", "payment_failed", amount="66.00", currency="USD",
                     invoice={"invoice_date": "2026-08-04"}),
    ]
    await put_all(worker, *bad, charge("p1"))
    assert reasons(worker.rejected) == [
        "unknown_invoice", "wrong_amount", "wrong_currency", "unknown_team", "invalid_json",
        "invalid_payment"]
    assert [(sent.key, sent.value) for sent in worker.rejected] == [
        (TEAM.encode(), raw) for raw in bad]
    assert worker.rejected[0].headers["detail"] == (
        b"team 'acme' has no invoice of 2026-09-04 issued")
    assert worker.stored() == [("p1", "payment_succeeded")]
    for reason in ("unknown_invoice", "wrong_amount", "wrong_currency", "unknown_team",
                   "invalid_json", "invalid_payment"):
        assert worker.metric("metering_payments_rejected_total", reason=reason) == 1
    assert worker.metric("metering_payments_rejected_total", reason="too_large") == 0


async def test_a_rejected_outcome_sent_again_is_rejected_again_not_stored(
    worker: Worker,
) -> None:
    wrong = charge("a1", amount="65.00")
    await put_all(worker, wrong, wrong)
    assert reasons(worker.rejected) == ["wrong_amount", "wrong_amount"]
    assert worker.store.payments(TEAM) == []


@pytest.mark.parametrize("store", [FlakyStore()], ids=["flaky"])
async def test_a_failed_write_is_retried_before_the_message_finishes(
    worker: Worker, store: FlakyStore,
) -> None:
    await put_all(worker, charge("p1"))
    assert store.refused == 1
    assert worker.stored() == [("p1", "payment_succeeded")]
    assert worker.metric("metering_payments_stored_total") == 1
