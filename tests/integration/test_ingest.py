"""POST /v1/events against a real `metering serve`, broker and worker: events posted over HTTP
(structured, batch, binary) are counted; a batch with bad members gets an answer per member;
a broker that freezes under a request gives 503 + Retry-After, and once it is back the same
request is taken (and sent once more, as by a client that lost the answer) and the counts
equal one delivery."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from aggregation import open_store
from metering.local.services import LocalClickHouse, start_broker
from tests.builders import cloud_event
from tests.integration.pipeline import consume_all, new_stack
from tests.integration.test_api import AUTH, CATALOG, start_serve

TEAM = "team-acme"
BATCH = {**AUTH, "Content-Type": "application/cloudevents-batch+json"}
STRUCTURED = {**AUTH, "Content-Type": "application/cloudevents+json"}
RETRY_WITHIN_SECONDS = 90.0


def _events(prefix: str, users: range, at: datetime) -> list[dict[str, Any]]:
    """Two events (clock in, clock out) per user."""
    return [cloud_event(f"{prefix}-{n}-{kind}", TEAM, f"{prefix}-u{n}", at, kind=kind,
                        source="http")
            for n in users for kind in ("clock_in", "clock_out")]


def _post(base: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{base}/v1/events", content=body, headers=headers, timeout=60)


def test_http_ingest_counts_once_through_a_broker_stop(
    clickhouse_server: LocalClickHouse, tmp_path: Path,
) -> None:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    account = CATALOG.account(TEAM)
    assert account is not None
    period = account.calendar.period_containing(at).start
    (tmp_path / "broker").mkdir()
    broker = start_broker(tmp_path / "broker")  # this test's own: it is stopped below
    try:
        stack = new_stack("ingest", broker=broker, clickhouse=clickhouse_server, tmp=tmp_path,
                          partitions=2)
        store = open_store(stack.store_url)
        store.ensure_schema()
        settings = {k: v for k, v in stack.env.items()
                    if k.startswith("METERING_") and k != "METERING_STORE_URL"}
        serving = start_serve(tmp_path, stack.store_url, METERING_INGEST_TIMEOUT_SECONDS="3",
                              **settings)
        try:
            serving.wait_healthy()
            base = serving.base
            # structured, binary, and a batch with bad members
            one = _post(base, json.dumps(_events("s", range(1), at)[0]).encode(), STRUCTURED)
            assert (one.status_code, one.json()) == (200, {"accepted": 1, "rejected": []})
            binary = _post(base, b'{"user_id": "b-u0"}', {
                **AUTH, "Content-Type": "application/json", "ce-specversion": "1.0",
                "ce-id": "b-0", "ce-source": "http", "ce-type": "login", "ce-subject": TEAM,
                "ce-time": at.isoformat()})
            assert (binary.status_code, binary.json()) == (200, {"accepted": 1, "rejected": []})
            good = _events("m", range(5), at)
            mixed = [*good[:3], {"specversion": "1.0", "id": "x"}, *good[3:],
                     cloud_event("late", TEAM, "z", at + timedelta(days=1))]
            answer = _post(base, json.dumps(mixed).encode(), BATCH)
            assert answer.status_code == 200, answer.text
            assert answer.json()["accepted"] == len(good)
            assert [(r["index"], r["reason"]) for r in answer.json()["rejected"]] == [
                (3, "missing_field"), (len(mixed) - 1, "future_time")]
            unauthorized = httpx.post(f"{base}/v1/events", content=b"[]",
                                      headers={"Content-Type": BATCH["Content-Type"]})
            assert unauthorized.status_code == 401

            # the broker freezes (SIGSTOP) under the request: its produce reaches the socket, no
            # acknowledgement comes: 503, nothing claimed; thawed, the retry is taken
            retried = json.dumps(_events("f", range(20), at)).encode()
            os.kill(broker.proc.pid, signal.SIGSTOP)
            try:
                down = _post(base, retried, BATCH)
            finally:
                os.kill(broker.proc.pid, signal.SIGCONT)
            assert down.status_code == 503, down.text
            assert down.headers["retry-after"].isdigit()
            assert down.json()["accepted"] == 0
            assert "retry the same request" in down.json()["detail"]
            deadline = time.monotonic() + RETRY_WITHIN_SECONDS
            again = _post(base, retried, BATCH)
            while again.status_code == 503 and time.monotonic() < deadline:
                time.sleep(float(again.headers["retry-after"]) / 5)
                again = _post(base, retried, BATCH)
            assert (again.status_code, again.json()) == (200, {"accepted": 40, "rejected": []})
            # a client that lost that 200 (its own timeout) sends the request once more: the
            # topic then surely holds every event twice, and the counts below must not move
            lost = _post(base, retried, BATCH)
            assert (lost.status_code, lost.json()) == (200, {"accepted": 40, "rejected": []})
        finally:
            serving.stop()

        stack.env["METERING_CATALOG"] = str(tmp_path / "catalog.yaml")  # team-acme's anchor
        stack.run_worker()
        users = 1 + 1 + 5 + 20
        assert store.mau(TEAM, period) == users
        daily = store.daily_usage(TEAM, period)
        assert sum(day.events for day in daily) == 1 + 1 + 10 + 40
        copies = [json.loads(value) for _k, value, _h in consume_all(
            broker.bootstrap, stack.events_topic) if value is not None]
        sent = [event["id"] for batch in copies for event in batch if event["id"][0] == "f"]
        assert set(sent) == {event["id"] for event in json.loads(retried)}
        assert len(sent) >= 80, len(sent)  # at least the two 200s' copies; the 503's may add
        print(f"f-events on the topic: {len(sent)} (40 distinct)")
        store.close()
    finally:
        broker.stop()
