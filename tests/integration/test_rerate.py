"""Pricing what-if against a real ClickHouse server and broker: a real `metering close`
issues three months of invoices, then `metering rerate` (a real process) and POST
/v1/rerate rate February and March again under a candidate that doubles the USD prices.
The figures are right, `--json` and the API answer alike, bad input fails in one line, and
the store's tables and the charges and notices topics are exactly as the close left them."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from clickhouse_driver import Client
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from aggregation import ActiveUserRow, StoredChange, open_store
from metering.api.app import create_api
from metering.api.rerate import MAX_CANDIDATE_BYTES
from metering.local.services import LocalBroker, LocalClickHouse
from metering.settings import Settings
from schemas import parse_catalog
from tests.builders import (
    LICENCE_PLAN,
    POWER_PLAN,
    PREMIUM_PLAN,
    account,
    billing_change,
    catalog_yaml,
)
from tests.integration.pipeline import METERING, consume_all, worker_env

EUR_PLAN = {**POWER_PLAN, "currency": "EUR"}
LIVE_ACCOUNTS = (
    account("team-bad", "2026-01-05", plan="licences", units=10),
    account("team-eom", "2026-01-31"),
    account("team-eur", "2026-01-31", plan="power-eur"),
    account("team-lic", "2026-01-10", plan="licences", units=45),
)
LIVE_TEXT = catalog_yaml(*LIVE_ACCOUNTS, plans={"power": POWER_PLAN, "power-eur": EUR_PLAN,
                                               "licences": LICENCE_PLAN})
# Doubles the USD prices, keeps EUR, and puts team-bad on seats, where its reduce_units
# change cannot apply.
CANDIDATE_TEXT = catalog_yaml(
    account("team-bad", "2026-01-05", plan="seats", units=10, members=2), *LIVE_ACCOUNTS[1:],
    plans={"power": {**POWER_PLAN, "base_fee": "20.00", "overage_price": "4.00"},
           "power-eur": EUR_PLAN, "licences": {**LICENCE_PLAN, "monthly_price": "3.00"},
           "seats": PREMIUM_PLAN},
)
RANGE = ("--from", "2026-02-01", "--to", "2026-03-31")
TOKENS = ("rerate-token",)
EXPECTED_TEAMS = [
    {"team": "team-eom", "currency": "USD", "issued": "32.00", "candidate": "64.00",
     "difference": "32.00", "issued_invoices": 2, "candidate_invoices": 2},
    {"team": "team-eur", "currency": "EUR", "issued": "32.00", "candidate": "32.00",
     "difference": "0.00", "issued_invoices": 2, "candidate_invoices": 2},
    {"team": "team-lic", "currency": "USD", "issued": "81.15", "candidate": "162.30",
     "difference": "81.15", "issued_invoices": 1, "candidate_invoices": 1},
]
EXPECTED_TOTALS = [
    {"currency": "EUR", "issued": "32.00", "candidate": "32.00", "difference": "0.00"},
    {"currency": "USD", "issued": "113.15", "candidate": "226.30", "difference": "113.15"},
]


@dataclass(frozen=True)
class Billed:
    """A database on the session's server holding three months closed by `metering close`."""

    folder: Path
    env: dict[str, str]
    port: int
    database: str
    topics: tuple[str, str]  # charges, notices
    bootstrap: str

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([METERING, *args], env=self.env, cwd=self.folder,  # noqa: S603
                              capture_output=True, text=True, timeout=180, check=False)

    def tables(self) -> dict[str, list[str]]:
        """Every table of the database and its rows (as text, sorted)."""
        client = Client("127.0.0.1", port=self.port, connect_timeout=5,
                        send_receive_timeout=60)
        try:
            names = [name for (name,) in client.execute(
                "SELECT name FROM system.tables WHERE database = %(db)s ORDER BY name",
                {"db": self.database})]
            return {name: sorted(repr(row) for row in client.execute(
                f"SELECT * FROM `{self.database}`.`{name}`"))  # noqa: S608 - known names
                    for name in names}
        finally:
            client.disconnect()

    def published(self) -> list[list[Any]]:
        return [consume_all(self.bootstrap, topic) for topic in self.topics]

    def url(self) -> str:
        return f"clickhouse://127.0.0.1:{self.port}/{self.database}"


def _users(team: str, start: date, count: int) -> list[ActiveUserRow]:
    at = datetime(start.year, start.month, start.day, 12, tzinfo=UTC)
    return [ActiveUserRow(team, start, f"u{n}", at, f"e{n}", "t", "login")
            for n in range(count)]


@pytest.fixture(scope="module")
def billed(clickhouse_server: LocalClickHouse, broker: LocalBroker,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Billed]:
    folder = tmp_path_factory.mktemp("rerate")
    tag = uuid.uuid4().hex[:8]
    database = f"rerate_{tag}"
    (folder / "live.yaml").write_text(LIVE_TEXT, encoding="utf-8")
    (folder / "candidate.yaml").write_text(CANDIDATE_TEXT, encoding="utf-8")
    topics = {f"{name}_topic": f"rerate-{name}-{tag}" for name in (
        "events", "rejected", "charges", "changes", "changes_rejected", "payments",
        "payments_rejected", "notices")}
    env = worker_env(broker_url=broker.url, catalog="live.yaml", partitions="1",
                     store_url=f"clickhouse://127.0.0.1:{clickhouse_server.tcp_port}/{database}",
                     **topics)
    state = Billed(folder, env, clickhouse_server.tcp_port, database,
                   (topics["charges_topic"], topics["notices_topic"]), broker.bootstrap)
    store = open_store(state.url())
    try:
        store.ensure_schema()
        for start, count in ((date(2026, 1, 31), 9), (date(2026, 2, 28), 7),
                             (date(2026, 3, 31), 12)):
            store.add_active_users(_users("team-eom", start, count))
            store.add_active_users(_users("team-eur", start, count))
        store.add_changes([
            StoredChange.of(billing_change("team-lic", "c1", "2026-02-15T09:00:00Z",
                                           "add_units", count=5)),
            StoredChange.of(billing_change("team-bad", "c2", "2026-02-01T09:00:00Z",
                                           "reduce_units", count=5)),
        ])
    finally:
        store.close()
    closed = state.run("close", "--as-of", "2026-04-01T00:00:00", "--quiet")
    assert closed.returncode == 0, closed.stderr
    assert "issued 9 new invoices" in closed.stderr, closed.stderr
    yield state


def _one_line_error(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert result.stdout == ""
    line, = result.stderr.splitlines()
    assert line.startswith("metering: error: "), line
    for needle in needles:
        assert needle in line, line


def test_rerate_prints_the_figures_and_writes_nothing(billed: Billed) -> None:
    tables, published = billed.tables(), billed.published()
    assert len(tables["invoices"]) == 9 and len(published[0]) == 9

    shown = billed.run("rerate", "--candidate", "candidate.yaml", *RANGE, "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["teams"] == EXPECTED_TEAMS
    assert data["totals"] == EXPECTED_TOTALS
    assert (data["from"], data["to"], data["as_of"]) == (
        "2026-02-01", "2026-03-31", "2026-04-01T00:59:59Z")
    skipped, = data["skipped"]
    assert skipped["team"] == "team-bad" and "seats reset" in skipped["reason"]

    text = billed.run("rerate", "--candidate", "candidate.yaml", *RANGE, "--team", "team-eom")
    assert text.returncode == 0, text.stderr
    rows = [line.split() for line in text.stdout.splitlines()]
    assert ["team-eom", "USD", "32.00", "64.00", "+32.00", "2/2"] in rows
    assert ["TOTAL", "USD", "32.00", "64.00", "+32.00"] in rows

    assert billed.tables() == tables
    assert billed.published() == published


@pytest.mark.parametrize(("args", "code", "needles"), [
    (("--candidate", "broken.yaml", *RANGE), 1, ("broken.yaml", "line 3")),
    (("--candidate", "missing.yaml", *RANGE), 1, ("missing.yaml", "cannot read")),
    (("--candidate", "candidate.yaml", "--from", "2016-01-01", "--to", "2025-12-31"), 2,
     ("3,653 days", "at most 366")),
    (("--candidate", "candidate.yaml", "--from", "2026-03-31", "--to", "2026-02-01"), 2,
     ("is after",)),
    (("--candidate", "candidate.yaml", *RANGE, "--team", "nobody"), 2,
     ("unknown team 'nobody'",)),
])
def test_bad_input_is_one_line_and_writes_nothing(
    billed: Billed, args: tuple[str, ...], code: int, needles: tuple[str, ...],
) -> None:
    (billed.folder / "broken.yaml").write_text("plans:\n  power:\n\tname: x\n",
                                               encoding="utf-8")
    tables = billed.tables()
    _one_line_error(billed.run("rerate", *args), code, *needles)
    assert billed.tables() == tables


async def test_the_api_answers_as_the_command_line(billed: Billed) -> None:
    store = open_store(billed.url())
    try:
        tables = billed.tables()
        app = create_api(settings=Settings(api_tokens=tuple(map(SecretStr, TOKENS))), store=store,
                         catalog=parse_catalog(LIVE_TEXT), registry=CollectorRegistry(),
                         clock=lambda: datetime(2026, 12, 1, tzinfo=UTC))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://api",
                                     headers={"Authorization": f"Bearer {TOKENS[0]}"}) as client:
            await _exercise(client, billed)
        assert billed.tables() == tables
    finally:
        store.close()


async def _exercise(client: httpx.AsyncClient, billed: Billed) -> None:
    query = {"from": "2026-02-01", "to": "2026-03-31"}
    yaml_type = {"Content-Type": "application/yaml"}
    answer = await client.post("/v1/rerate", params=query, content=CANDIDATE_TEXT,
                               headers=yaml_type)
    assert answer.status_code == 200, answer.text
    shown = billed.run("rerate", "--candidate", "candidate.yaml", *RANGE, "--json")
    assert answer.json() == json.loads(shown.stdout)

    plain = await client.post("/v1/rerate", params={**query, "team": "team-lic"},
                              content=CANDIDATE_TEXT.replace("\n", "\r\n"),
                              headers={"Content-Type": "text/plain; charset=utf-8"})
    assert plain.status_code == 200, plain.text
    assert plain.json()["teams"] == [EXPECTED_TEAMS[2]]

    async def refused(status: int, *, params: dict[str, str] = query,
                      content: str | bytes = CANDIDATE_TEXT,
                      headers: dict[str, str] = yaml_type) -> str:
        answer = await client.post("/v1/rerate", params=params, content=content,
                                   headers=headers)
        assert answer.status_code == status, answer.text
        detail: str = answer.json()["detail"]
        assert "\n" not in detail
        return detail

    assert "bearer" in await refused(401, headers={**yaml_type, "Authorization": "Bearer x"})
    assert "line 3" in await refused(422, content="plans:\n  power:\n\tname: x\n")
    assert "at most 366" in await refused(422, params={"from": "2016-01-01",
                                                       "to": "2025-12-31"})
    assert "is after" in await refused(422, params={"from": "2026-03-31", "to": "2026-02-01"})
    assert "outside" in await refused(422, params={"from": "1970-01-01", "to": "1970-01-02"})
    assert "query.from" in await refused(422, params={"from": "2026-02-30", "to": "2026-03-31"})
    assert "unknown team 'nobody'" in await refused(404, params={**query, "team": "nobody"})
    assert "not UTF-8" in await refused(422, content=b"plans: {\xff}")
    assert "application/yaml" in await refused(415, headers={"Content-Type": "application/json"})
    assert "larger than" in await refused(413, content=b"#" * (MAX_CANDIDATE_BYTES + 1))


def test_the_rerate_is_documented(billed: Billed) -> None:
    shown = billed.run("rerate", "--help")
    assert shown.returncode == 0, shown.stderr
    assert "candidate catalog" in shown.stdout and "366" in shown.stdout
