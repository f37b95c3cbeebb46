"""The official CloudEvents SDK as an outside client: events built and serialized by the
`cloudevents` package, posted to `POST /v1/events` of a real `metering serve` (HTTP structured
and binary modes, binary with and without a `datacontenttype`) and produced as Kafka messages
(Kafka structured and binary modes), are counted once by a real `metering worker`; a binary
Kafka message without its `ce_id` is rejected with its reason.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from cloudevents import kafka as ce_kafka
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from kafka import KafkaProducer

from aggregation import open_store
from metering.local.services import LocalBroker, LocalClickHouse
from schemas import EVENT_TYPES
from tests.integration.pipeline import consume_all, new_stack
from tests.integration.test_api import AUTH, CATALOG, start_serve
from tests.integration.test_ingest import TEAM


def _event(source: str, event_id: str, user: str, at: datetime, n: int, *, typed: bool
           ) -> CloudEvent:
    """One activity as a product service builds it with the SDK (unless `typed`, every other
    one without a `datacontenttype`: the SDK then sends HTTP binary mode without a
    Content-Type; its Kafka binary mode needs one)."""
    attributes = {"type": EVENT_TYPES[n % len(EVENT_TYPES)], "source": source, "id": event_id,
                  "subject": TEAM, "time": at.isoformat()}
    if typed or n % 2 == 0:
        attributes["datacontenttype"] = "application/json"
    return CloudEvent(attributes, {"user_id": user})


def _events(prefix: str, users: int, at: datetime, *, typed: bool = False) -> list[CloudEvent]:
    """Two events per user (distinct ids), so counts of events and of users differ."""
    return [_event(f"sdk-{prefix}", f"{prefix}-{n}-{k}", f"{prefix}-u{n}", at, n + k,
                   typed=typed)
            for n in range(users) for k in range(2)]


def _user(event: CloudEvent) -> str:
    data = event.get_data()
    assert isinstance(data, dict)
    return str(data["user_id"])


def _post(base: str, headers: dict[str, str], body: bytes) -> httpx.Response:
    return httpx.post(f"{base}/v1/events", content=body, headers={**AUTH, **headers},
                      timeout=60)


def _produce(bootstrap: str, topic: str, messages: list[ce_kafka.KafkaMessage]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for message in messages:
            key = message.key.encode() if isinstance(message.key, str) else message.key
            producer.send(topic, key=key, value=message.value,
                          headers=list(message.headers.items())).get(timeout=30)
    finally:
        producer.close()


def test_sdk_events_over_http_and_kafka_are_counted(
    broker: LocalBroker, clickhouse_server: LocalClickHouse, tmp_path: Path,
) -> None:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    account = CATALOG.account(TEAM)
    assert account is not None
    period = account.calendar.period_containing(at).start
    stack = new_stack("sdk", broker=broker, clickhouse=clickhouse_server, tmp=tmp_path,
                      partitions=2)
    store = open_store(stack.store_url)
    try:
        store.ensure_schema()
        http_structured, http_binary = _events("hs", 3, at), _events("hb", 2, at)
        kafka_structured, kafka_binary = _events("ks", 4, at), _events("kb", 3, at, typed=True)

        settings = {k: v for k, v in stack.env.items()
                    if k.startswith("METERING_") and k != "METERING_STORE_URL"}
        serving = start_serve(tmp_path, stack.store_url, **settings)
        try:
            serving.wait_healthy()
            for event in http_structured:
                answer = _post(serving.base, *to_structured(event))
                assert answer.status_code == 200, answer.text
                assert answer.json() == {"accepted": 1, "rejected": []}
            for event in http_binary:
                headers, body = to_binary(event)
                assert headers.get("content-type") == event.get("datacontenttype")
                answer = _post(serving.base, headers, body)
                assert answer.status_code == 200, answer.text
                assert answer.json() == {"accepted": 1, "rejected": []}
        finally:
            serving.stop()

        def by_team(event: CloudEvent) -> str:
            return str(event["subject"])

        def binary(event: CloudEvent) -> ce_kafka.KafkaMessage:
            return ce_kafka.to_binary(event, key_mapper=by_team)

        no_id = binary(kafka_binary[0])
        no_id = no_id._replace(headers={k: v for k, v in no_id.headers.items() if k != "ce_id"})
        _produce(broker.bootstrap, stack.events_topic,
                 [ce_kafka.to_structured(e, key_mapper=by_team) for e in kafka_structured]
                 + [binary(e) for e in kafka_binary] + [no_id])

        stack.env["METERING_CATALOG"] = str(tmp_path / "catalog.yaml")  # team-acme's anchor
        stack.run_worker()

        counted = [*http_structured, *http_binary, *kafka_structured, *kafka_binary]
        assert store.mau(TEAM, period) == len({_user(e) for e in counted})
        daily = store.daily_usage(TEAM, period)
        assert sum(day.events for day in daily) == len(counted)

        rejected = consume_all(broker.bootstrap, stack.rejected_topic)
        assert len(rejected) == 1, rejected
        key, value, why = rejected[0]
        assert key == TEAM.encode() and value is not None
        assert json.loads(value)["data"] == {"user_id": _user(kafka_binary[0])}
        assert why["reason"] == b"missing_field"
        assert b"id" in why["detail"]
    finally:
        store.close()
