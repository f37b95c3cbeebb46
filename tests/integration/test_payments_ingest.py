"""The billing-payments agent in the real `metering worker` process, on the real broker and
ClickHouse server: `metering close` issues seed 001's first invoice ($10.00 for the Power
plan's first month), the processor (librdkafka) reports a failed attempt and its successful
retry, each stored once however often it arrives, and a payment for an invoice never issued
lands on the rejected-payments topic with its reason."""

from __future__ import annotations

import json
import subprocess  # noqa: S404 - the test runs the real command line
import uuid
from pathlib import Path

import confluent_kafka
import pytest

from aggregation import open_store
from metering.kafka_io import BrokerError, ensure_topics, wait_for_lag_zero
from metering.local.services import LocalBroker, LocalClickHouse, ManagedProcess
from tests.builders import account, catalog_yaml
from tests.integration.pipeline import METERING, consume_all, worker_env

CATALOG = catalog_yaml(account("acme", "2023-06-01"))


def payment(ident: str, kind: str, *, invoice_date: str, attempt: int, **data: str) -> bytes:
    return json.dumps({
        "specversion": "1.0", "id": ident, "source": "stripe", "type": kind,
        "time": f"{invoice_date}T00:05:00Z", "subject": "acme",
        "data": {"invoice": {"invoice_date": invoice_date, "reference": ""},
                 "attempt": attempt, "amount": "10.00", "currency": "USD", **data},
    }).encode()


def test_payments_of_an_issued_invoice_are_stored_once_and_others_rejected(
    broker: LocalBroker, clickhouse_server: LocalClickHouse, tmp_path: Path
) -> None:
    tag = f"payments-{uuid.uuid4().hex[:8]}"
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG)
    store_url = f"clickhouse://127.0.0.1:{clickhouse_server.tcp_port}/{tag.replace('-', '_')}"
    payments, rejected = f"{tag}-payments", f"{tag}-payments-rejected"
    env = worker_env(
        broker_url=broker.url, store_url=store_url, app_id=f"metering-{tag}",
        events_topic=f"{tag}-events", rejected_topic=f"{tag}-rejected",
        charges_topic=f"{tag}-charges", changes_topic=f"{tag}-changes",
        changes_rejected_topic=f"{tag}-changes-rejected", payments_topic=payments,
        payments_rejected_topic=rejected, notices_topic=f"{tag}-notices",
        catalog=str(catalog), partitions="2", session_timeout_seconds="6",
        work_dir=str(tmp_path / "worker"),
    )
    ensure_topics(broker.bootstrap, [payments, rejected], partitions=2)

    closed = subprocess.run(  # noqa: S603 - fixed argv
        [METERING, "close", "--as-of", "2023-06-02", "--team", "acme", "--json"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert closed.returncode == 0, closed.stderr
    assert [(inv["invoice_date"], inv["total"]) for inv in json.loads(closed.stdout)] == [
        ("2023-06-01", "10.00")]

    failed = payment("pay-1", "payment_failed", invoice_date="2023-06-01", attempt=1,
                     failure="card_declined")
    paid = payment("pay-2", "payment_succeeded", invoice_date="2023-06-01", attempt=2)
    never_issued = payment("pay-3", "payment_succeeded", invoice_date="2023-07-01", attempt=1)
    producer = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap})
    failures: list[object] = []
    for value in (failed, paid, paid, failed, never_issued):  # the processor's redeliveries
        producer.produce(payments, key=b"acme", value=value,
                         on_delivery=lambda err, _msg: failures.append(err) if err else None)
    assert producer.flush(30) == 0 and failures == []
    del producer  # librdkafka keeps reconnecting until its producer is destroyed

    log = tmp_path / "worker.log"
    worker = ManagedProcess(name="metering worker", argv=[METERING, "worker"], log_path=log,
                            env=env)
    worker.spawn()
    try:
        wait_for_lag_zero(broker.bootstrap, group=env["METERING_APP_ID"], topic=payments,
                          timeout=120, alive=worker.alive)
    except BrokerError as exc:
        pytest.fail(f"worker did not catch up ({exc}): {log.read_text()[-3000:]}")
    finally:
        worker.stop()
    assert "Traceback" not in log.read_text()

    store = open_store(store_url)
    try:
        assert [(p.payment_id, p.payment().type) for p in store.payments("acme")] == [
            ("pay-1", "payment_failed"), ("pay-2", "payment_succeeded")]
    finally:
        store.close()
    assert [(key, value, headers["reason"])
            for key, value, headers in consume_all(broker.bootstrap, rejected)] == [
        (b"acme", never_issued, b"unknown_invoice")]
