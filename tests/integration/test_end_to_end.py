"""Seed 001 (Jibble Power Plan, "Daniel") end to end on the real broker and ClickHouse server.

Events go in through `metering emit` and through librdkafka (confluent-kafka: an outside
Kafka client, proving the wire format; Debian's kcat links librdkafka 2.0.2, which cannot
parse tansu's ApiVersions v3 reply), the real `metering worker` process counts them into
clickhouse-server 18.16, and `metering close` issues the invoices.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import confluent_kafka
import pytest

from metering.kafka_io import ensure_topics
from metering.local.services import LocalBroker, LocalClickHouse
from tests.builders import account, catalog_yaml, cloud_event, utc
from tests.integration.pipeline import (
    METERING,
    consume_all,
    run_worker_until_caught_up,
    worker_env,
)

CATALOG = catalog_yaml(account("team-daniel", "2026-07-04"),
                       account("team-angela", "2026-07-04", timezone="Europe/Berlin"))


@dataclass
class Stack:
    env: dict[str, str]
    broker: LocalBroker
    topics: dict[str, str]
    tmp: Path

    def run(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [METERING, *args], env=self.env, input=stdin, capture_output=True, timeout=120,
            check=False,
        )


def daniel_events() -> list[dict[str, object]]:
    """15 people active during the trial (June), 33 in July's period, more in August."""
    july = utc(2026, 7, 4, 0, 30)
    out = [cloud_event(f"trial-{u}", "team-daniel", f"d{u}", utc(2026, 6, 25, 9))
           for u in range(15)]
    for u in range(33):
        for day in range(3):
            at = july + timedelta(days=u % 28 + day, hours=day)
            out.append(cloud_event(f"jul-{u}-{day}", "team-daniel", f"d{u}", at, kind="clock_out"))
    out.append(cloud_event("aug-late", "team-daniel", "d99", utc(2026, 8, 4, 0, 0, 1)))
    return out


def angela_events() -> list[dict[str, object]]:
    """8 people in July's period; 23:30 on 3 Aug in Berlin is 21:30 UTC, still July's period."""
    base = utc(2026, 7, 10, 8)
    out = [cloud_event(f"a-{u}", "team-angela", f"a{u}", base + timedelta(days=u))
           for u in range(7)]
    out.append(cloud_event("a-edge", "team-angela", "a-edge", utc(2026, 8, 3, 21, 30)))
    return out


@pytest.fixture
def stack(
    broker: LocalBroker, clickhouse_server: LocalClickHouse, tmp_path: Path
) -> Iterator[Stack]:
    tag = uuid.uuid4().hex[:8]
    topics = {"events": f"events-{tag}", "rejected": f"rejected-{tag}",
              "charges": f"charges-{tag}"}
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG)
    env = worker_env(
        broker_url=broker.url,
        store_url=f"clickhouse://127.0.0.1:{clickhouse_server.tcp_port}/e2e_{tag}",
        catalog=str(catalog), app_id=f"metering-{tag}", events_topic=topics["events"],
        rejected_topic=topics["rejected"], charges_topic=topics["charges"], partitions="4",
        session_timeout_seconds="6",
    )
    ensure_topics(broker.bootstrap, topics.values(), partitions=4)
    yield Stack(env=env, broker=broker, topics=topics, tmp=tmp_path)


def run_worker(stack: Stack) -> None:
    run_worker_until_caught_up(env=stack.env, bootstrap=stack.broker.bootstrap,
                               log_path=stack.tmp / "worker.log")


def test_seed_001_daniel_end_to_end(stack: Stack) -> None:
    lines = [json.dumps(e) for e in daniel_events()]
    retried = lines + lines[::7]  # producer retries: same (source, id) again
    retried.insert(5, '{"specversion": "1.0", "id": "broken"')
    emitted = stack.run("emit", "-", stdin="\n".join(retried).encode())
    assert emitted.returncode == 1, emitted.stderr
    assert emitted.stderr.decode().startswith("line 6: invalid_json:")
    assert f"sent {len(retried) - 1} events; rejected 1 lines" in emitted.stdout.decode()

    outside = confluent_kafka.Producer({"bootstrap.servers": stack.broker.bootstrap})
    failures: list[object] = []
    values = [json.dumps(e).encode() for e in angela_events()] + [b'{"oops": true}',
                                                                   b"not json at all"]
    for value in values:
        outside.produce(stack.topics["events"], key=b"team-angela", value=value,
                        on_delivery=lambda err, _msg: failures.append(err) if err else None)
    assert outside.flush(30) == 0 and failures == []
    del outside  # librdkafka keeps reconnecting until its producer is destroyed

    run_worker(stack)

    rejected = consume_all(stack.broker.bootstrap, stack.topics["rejected"])
    assert sorted(h["reason"] for _, _, h in rejected) == [b"invalid_json", b"missing_field"]
    assert {v for _, v, _ in rejected} == {b'{"oops": true}', b"not json at all"}

    usage = stack.run("usage", "--team", "team-daniel", "--at", "2026-07-20", "--json")
    assert usage.returncode == 0, usage.stderr
    report = json.loads(usage.stdout)
    assert (report["period_start"], report["period_end"], report["mau"]) == (
        "2026-07-04", "2026-08-04", 33)
    first = {u["user_id"]: u for u in report["users"]}["d3"]
    assert (first["event_id"], first["first_time"]) == ("jul-3-0", "2026-07-07T00:30:00+00:00")

    july = stack.run("close", "--as-of", "2026-07-04", "--json")
    assert july.returncode == 0, july.stderr
    invoices = json.loads(july.stdout)
    assert [(i["team"], i["invoice_date"], i["total"]) for i in invoices] == [
        ("team-angela", "2026-07-04", "10.00"), ("team-daniel", "2026-07-04", "10.00")]
    daniel_july = invoices[1]
    assert [line["kind"] for line in daniel_july["lines"]] == ["base"]  # trial users unbilled

    august = stack.run("close", "--as-of", "2026-08-04", "--json")
    assert august.returncode == 0, august.stderr
    by_key = {(i["team"], i["invoice_date"]): i for i in json.loads(august.stdout)}
    daniel = by_key[("team-daniel", "2026-08-04")]
    # Seed 001 prints "$54 for the 27 additional MAUs", but its own rule gives 33 - 5 = 28
    # extra users: 28 x $2 = $56, so the August invoice is $10 + $56 = $66, not $64.
    assert [(ln["kind"], ln["quantity"], ln["unit_price"], ln["amount"], ln["service_start"],
             ln["service_end"]) for ln in daniel["lines"]] == [
        ("base", "1", "10.00", "10.00", "2026-08-04", "2026-09-04"),
        ("overage", "28", "2.00", "56.00", "2026-07-04", "2026-08-04"),
    ]
    assert [ln["description"] for ln in daniel["lines"]] == [
        "Power plan, 2026-08-04 to 2026-09-04", "28 active users above 5 included"]
    assert (daniel["subtotal"], daniel["tax"], daniel["total"]) == ("66.00", "0.00", "66.00")
    angela = by_key[("team-angela", "2026-08-04")]  # billed separately: own 5 included
    assert [(ln["kind"], ln["quantity"], ln["amount"]) for ln in angela["lines"]] == [
        ("base", "1", "10.00"), ("overage", "3", "6.00")]
    assert angela["total"] == "16.00"

    again = stack.run("close", "--as-of", "2026-08-04", "--json")
    assert again.stdout == august.stdout
    assert b"issued 0 new invoices" in again.stderr
    charges = consume_all(stack.broker.bootstrap, stack.topics["charges"])
    assert sorted((k, json.loads(v or b"")["invoice_date"]) for k, v, _ in charges) == [
        (b"team-angela", "2026-07-04"), (b"team-angela", "2026-08-04"),
        (b"team-daniel", "2026-07-04"), (b"team-daniel", "2026-08-04")]
