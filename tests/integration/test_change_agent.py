"""The billing-changes agent in the real `metering worker` process, on the real broker and
ClickHouse server: a valid change is stored once however often it arrives, every bad one
lands on the rejected-changes topic with its reason, and `metering close` turns the stored
history into seed 002's immediate charge."""

from __future__ import annotations

import json
import subprocess  # noqa: S404 - the test runs the real command line
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from aggregation import open_store
from metering.kafka_io import BrokerError, ensure_topics, wait_for_lag_zero
from metering.local.services import LocalBroker, LocalClickHouse, ManagedProcess
from tests.builders import PREMIUM_PLAN, account, catalog_yaml, change_wire
from tests.integration.pipeline import METERING, consume_all, worker_env

CATALOG = catalog_yaml(account("acme", "2023-06-01", plan="premium", units=50, members=41),
                       plans={"premium": PREMIUM_PLAN})


def change(ident: str, at: str, kind: str, team: str = "acme", **data: Any) -> bytes:
    return change_wire(team, ident, at, kind, **data)


def test_changes_are_stored_once_rejected_with_reasons_and_charged_by_the_close(
    broker: LocalBroker, clickhouse_server: LocalClickHouse, tmp_path: Path
) -> None:
    tag = f"changes-{uuid.uuid4().hex[:8]}"
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG)
    store_url = f"clickhouse://127.0.0.1:{clickhouse_server.tcp_port}/{tag.replace('-', '_')}"
    changes, rejected = f"{tag}-changes", f"{tag}-changes-rejected"
    env = worker_env(
        broker_url=broker.url, store_url=store_url, app_id=f"metering-{tag}",
        events_topic=f"{tag}-events", rejected_topic=f"{tag}-rejected",
        charges_topic=f"{tag}-charges", changes_topic=changes, changes_rejected_topic=rejected,
        catalog=str(catalog), partitions="2", session_timeout_seconds="6",
        work_dir=str(tmp_path / "worker"),
    )
    ensure_topics(broker.bootstrap, [changes, rejected], partitions=2)
    seats = change("s1", "2023-12-01T09:00:00Z", "add_units", count=10)
    messages = [
        (b"acme", seats),
        (b"acme", seats),  # a producer's retry: stored once
        (b"acme", change("m1", "2023-12-02T09:00:00Z", "member_added", count=30)),  # 71 > 60
        (b"acme", b'{"specversion": "1.0", '),
        (b"ghost", change("g1", "2023-12-01T09:00:00Z", "add_units", team="ghost", count=1)),
        (b"acme", change("x1", "2023-12-01T09:00:00Z", "add_units")[:-1] + b', "extra": 1}'),
    ]
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    for key, value in messages:
        producer.send(changes, key=key, value=value)
    producer.flush()
    producer.close()

    log = tmp_path / "worker.log"
    worker = ManagedProcess(name="metering worker", argv=[METERING, "worker"], log_path=log,
                            env=env)
    worker.spawn()
    try:
        wait_for_lag_zero(broker.bootstrap, group=env["METERING_APP_ID"], topic=changes,
                          timeout=120, alive=worker.alive)
    except BrokerError as exc:
        pytest.fail(f"worker did not catch up ({exc}): {log.read_text()[-3000:]}")
    finally:
        worker.stop()
    assert "Traceback" not in log.read_text()

    store = open_store(store_url)
    try:
        assert [(c.team, c.source, c.change_id) for c in store.changes("acme")] == [
            ("acme", "crm", "s1")]
        assert store.changes("ghost") == []
    finally:
        store.close()
    reasons = [(key, headers["reason"].decode())
               for key, _, headers in consume_all(broker.bootstrap, rejected)]
    assert sorted(reasons) == sorted([
        (b"acme", "refused"), (b"acme", "invalid_json"), (b"ghost", "unknown_team"),
        (b"acme", "invalid_change"),
    ])
    refused = next(headers for _, _, headers in consume_all(broker.bootstrap, rejected)
                   if headers["reason"] == b"refused")
    assert b"member_added" in refused["detail"] and b"below" in refused["detail"]

    closed = subprocess.run(  # noqa: S603 - fixed argv
        [METERING, "close", "--as-of", "2023-12-02", "--team", "acme", "--json"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert closed.returncode == 0, closed.stderr
    invoices = json.loads(closed.stdout)
    assert [(inv["invoice_date"], inv.get("reference", ""), inv["total"])
            for inv in invoices] == [
        ("2023-06-01", "", "1494.00"),  # seed 002: 50 seats x $2.49 x 12
        ("2023-12-01", "crm/s1", "149.40"),  # seed 002: 10 seats for the 6 months left
    ]


def test_emit_changes_sends_valid_changes_keyed_by_team_and_reports_bad_lines(
    broker: LocalBroker, tmp_path: Path
) -> None:
    topic = f"changes-{uuid.uuid4().hex[:8]}"
    good = change("s1", "2023-12-01T09:00:00Z", "add_units", count=10)
    lines = tmp_path / "changes.jsonl"
    lines.write_bytes(good + b"\n" + b'{"specversion": "1.0"}\n' + b"\n"
                      + change("z1", "2023-12-01T09:00:00Z", "teleport") + b"\n")
    env = worker_env(broker_url=broker.url, changes_topic=topic, partitions="2")
    sent = subprocess.run(  # noqa: S603 - fixed argv
        [METERING, "emit", "--changes", str(lines)], env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert sent.returncode == 1
    assert sent.stdout == "sent 1 changes; rejected 2 lines\n"
    problems = sent.stderr.splitlines()
    assert [line.split(":")[0] for line in problems] == ["line 2", "line 4"], problems
    assert all(": invalid_change: " in line for line in problems), problems
    assert [(key, value) for key, value, _ in consume_all(broker.bootstrap, topic)] == [
        (b"acme", good)]
