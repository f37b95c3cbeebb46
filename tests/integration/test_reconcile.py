"""`metering reconcile` on the real pipeline: the `metering worker` process counts a batch with
repeats and a bad member into clickhouse-server, `metering close` bills the period, and the
ledger balances (exit 0, the figures expected); then a counted user is deleted behind the
pipeline's back and `metering reconcile` exits 1 naming team, period and the two numbers.
Bad input: one line on stderr, a non-zero exit."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from clickhouse_driver import Client

from aggregation import open_store
from metering.api.ledger import ledger_view
from metering.kafka_io import ensure_topics, make_producer
from metering.local.services import LocalBroker, LocalClickHouse
from metering.metrics import LedgerCollector
from metering.reconcile import period_json, reconcile_period
from schemas import parse_catalog
from tests.builders import account, catalog_yaml, cloud_event, utc
from tests.integration.pipeline import METERING, run_worker_until_caught_up, worker_env

CATALOG = catalog_yaml(account("team-rec", "2026-07-01"), account("team-two", "2026-07-01"))
JULY = "2026-07-01"
MUTATION_SECONDS = 60.0


@dataclass
class Stack:
    env: dict[str, str]
    broker: LocalBroker
    clickhouse: LocalClickHouse
    events_topic: str
    database: str
    store_url: str
    tmp: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([METERING, *args], env=self.env, capture_output=True, text=True,
                              timeout=120, check=False)

    def query(self, sql: str, params: dict[str, str]) -> list[Any]:
        client = Client("127.0.0.1", port=self.clickhouse.tcp_port, connect_timeout=5,
                        send_receive_timeout=30)
        try:
            rows: list[Any] = client.execute(sql, params)
            return rows
        finally:
            client.disconnect()


@pytest.fixture
def stack(broker: LocalBroker, clickhouse_server: LocalClickHouse, tmp_path: Path
          ) -> Iterator[Stack]:
    tag = uuid.uuid4().hex[:8]
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG)
    database = f"reconcile_{tag}"
    store_url = f"clickhouse://127.0.0.1:{clickhouse_server.tcp_port}/{database}"
    env = worker_env(
        broker_url=broker.url, store_url=store_url, catalog=str(catalog),
        app_id=f"metering-{tag}", events_topic=f"events-{tag}",
        rejected_topic=f"rejected-{tag}", charges_topic=f"charges-{tag}", partitions="1",
        session_timeout_seconds="6", work_dir=str(tmp_path / "worker"),
    )
    ensure_topics(broker.bootstrap, [f"events-{tag}", f"rejected-{tag}"], partitions=1)
    yield Stack(env=env, broker=broker, clickhouse=clickhouse_server,
                events_topic=f"events-{tag}", database=database, store_url=store_url,
                tmp=tmp_path)


def _send(stack: Stack, messages: list[tuple[bytes, bytes]]) -> None:
    producer = make_producer(stack.broker.bootstrap)
    try:
        for key, value in messages:
            producer.send(stack.events_topic, key=key, value=value).get(timeout=30)
    finally:
        producer.close()


def _by_period(documents: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["team"], d["period_start"]): d for d in documents}


def _delete_user(stack: Stack, team: str, period_start: str, user: str) -> None:
    """Delete one counted user's rows and wait until the mutation is done."""
    stack.query(f"ALTER TABLE {stack.database}.active_users DELETE WHERE team = %(team)s "
                "AND period_start = %(start)s AND user_id = %(user)s",
                {"team": team, "start": period_start, "user": user})
    deadline = time.monotonic() + MUTATION_SECONDS
    while stack.query("SELECT count() FROM system.mutations WHERE database = %(db)s "
                      "AND table = 'active_users' AND is_done = 0", {"db": stack.database}
                      )[0][0]:
        if time.monotonic() > deadline:
            pytest.fail(f"the delete of {user} was not done within {MUTATION_SECONDS:.0f}s")
        time.sleep(0.2)


def test_the_ledger_balances_then_catches_a_user_deleted_behind_its_back(stack: Stack
                                                                          ) -> None:
    at = utc(2026, 7, 5, 9)
    e1, e2, e3 = (cloud_event(f"e{n}", "team-rec", f"u{n}", at) for n in (1, 2, 3))
    bad = cloud_event("bad", "team-rec", "u9", at)
    del bad["data"]  # missing_field: counts in team-rec's period it was received in
    received_on = datetime.now(UTC).date()
    _send(stack, [
        (b"team-rec", json.dumps([e1, e2, e1, bad, e3, e2]).encode()),  # one batch
        (b"nobody", b"not json at all"),  # names no team
        (b"team-two", json.dumps(cloud_event("t1", "team-two", "v1",
                                             utc(2026, 8, 10))).encode()),
    ])
    run_worker_until_caught_up(env=stack.env, bootstrap=stack.broker.bootstrap,
                               log_path=stack.tmp / "worker.log")
    closed = stack.run("close", "--as-of", "2026-08-01", "--quiet")
    assert closed.returncode == 0, closed.stderr

    reconciled = stack.run("reconcile", "--json")
    assert reconciled.returncode == 0, reconciled.stderr
    assert reconciled.stderr == ""
    periods = _by_period(json.loads(reconciled.stdout))
    now_month = received_on.replace(day=1).isoformat()  # both calendars: months from the 1st
    assert set(periods) == {("", now_month), ("team-rec", JULY), ("team-rec", now_month),
                            ("team-two", JULY), ("team-two", "2026-08-01")}
    july = periods[("team-rec", JULY)]
    assert {key: july[key] for key in (
        "messages", "received", "accepted", "rejected", "duplicates", "written", "late",
        "distinct_events", "stored_users", "counted_users", "holds")} == {
        "messages": 1, "received": 5, "accepted": 5, "rejected": 0,
        "duplicates": {"window": 2, "store_key": 0, "total": 2}, "written": 3,
        "late": {"events": 3, "adjusted_by": []},  # July was closed when they arrived
        "distinct_events": 3, "stored_users": 3, "counted_users": 3, "holds": True}
    assert july["billed"] == {"invoice_date": "2026-08-01", "reference": "", "users": 3,
                              "adjusted": 0, "adjustments": [], "pending": 0}
    assert [(i["name"], i["holds"], i["left"], i["right"]) for i in july["identities"]] == [
        ("received", True, 5, 5), ("accepted", True, 5, 5), ("users", True, 3, 3),
        ("billed", True, 3, 3)]
    refused = periods[("team-rec", now_month)]
    assert (refused["received"], refused["rejected"], refused["rejected_by_reason"]) == (
        1, 1, {"missing_field": 1})
    nameless = periods[("", now_month)]
    assert (nameless["received"], nameless["rejected_by_reason"]) == (1, {"invalid_json": 1})
    assert periods[("team-two", "2026-08-01")]["billed"] is None
    idle = periods[("team-two", JULY)]  # billed on 2026-08-01 with no user, no event
    assert (idle["messages"], idle["billed"]["users"], idle["holds"]) == (0, 0, True)

    text = stack.run("reconcile")
    assert text.returncode == 0, text.stderr
    assert text.stdout.rstrip().endswith("reconciled 5 periods of 3 teams: every identity holds")

    store = open_store(stack.store_url)
    try:
        one = stack.run("reconcile", "--team", "team-rec", "--period", JULY, "--json")
        assert one.returncode == 0, one.stderr
        assert json.loads(one.stdout) == july
        account = parse_catalog(CATALOG).account("team-rec")
        assert account is not None
        assert ledger_view(store, account, date(2026, 7, 1)).model_dump(mode="json") == july
        samples = {(family.name, tuple(sample.labels.values())): sample.value
                   for family in LedgerCollector(store).collect() for sample in family.samples}
        assert samples[("metering_ledger_up", ())] == 1
        assert samples[("metering_ledger_events", ("received",))] == 8
        assert samples[("metering_ledger_events", ("duplicate_window",))] == 2
        assert samples[("metering_ledger_rejected", ("invalid_json",))] == 1

        _delete_user(stack, "team-rec", JULY, "u1")
        after = period_json(reconcile_period(store, "team-rec", date(2026, 7, 1)))
        assert [(i["name"], i["left"], i["right"]) for i in after["identities"]
                if not i["holds"]] == [("users", 2, 3), ("billed", 3, 2)]
    finally:
        store.close()

    broken = stack.run("reconcile")
    assert broken.returncode == 1, broken.stderr
    lines = broken.stderr.splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "metering: ledger: team team-rec period 2026-07-01: users: 2 != 3",
        "metering: ledger: team team-rec period 2026-07-01: billed: 3 != 2",
    ], broken.stderr
    assert "users lost from the store after billing" in lines[1]
    assert "reconciled 5 periods of 3 teams: 2 violations" in broken.stdout
    scoped = stack.run("reconcile", "--team", "team-rec", "--period", JULY)
    assert scoped.returncode == 1
    assert scoped.stderr.splitlines() == lines


# --- bad input: one line, a non-zero exit ------------------------------------------------------


def _env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    return worker_env(store_url=f"chdb://{tmp_path / 'store'}",
                      catalog=str(tmp_path / "catalog.yaml"))


@pytest.mark.parametrize(("args", "code", "needle"), [
    (["--team", "nobody"], 1, "unknown team 'nobody'"),
    (["--team", "team-rec", "--period", "2026-13-01"], 2, "not an ISO date"),
    (["--team", "team-rec", "--period", "july"], 2, "not an ISO date"),
    (["--team", "team-rec", "--period", "2026-07-15"], 2,
     "is not a period start of team 'team-rec': the period holding it starts on 2026-07-01"),
    (["--team", "team-rec", "--period", "0001-01-01"], 2, "outside 1971-01-01..2104-12-31"),
    (["--period", "2026-07-01"], 2, "--period needs --team"),
])
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], code: int, needle: str
                               ) -> None:
    result = subprocess.run([METERING, "reconcile", *args], env=_env(tmp_path),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    (line,) = result.stderr.splitlines()
    assert line.startswith("metering: error: ") and needle in line, line
    assert result.stdout == ""


def test_a_team_without_a_catalog_is_one_line(tmp_path: Path) -> None:
    env = worker_env(store_url=f"chdb://{tmp_path / 'store'}")
    result = subprocess.run([METERING, "reconcile", "--team", "team-rec"], env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("metering: error: ") and "catalog" in line
