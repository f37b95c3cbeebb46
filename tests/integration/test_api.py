"""The read API against real stores (ClickHouse server and chdb): auth, errors, paging, daily
usage, the estimate, invoices whose `why` links resolve, and `metering serve` as a process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from aggregation import StoredChange, open_store
from aggregation.store import ActiveUserRow, EventRow, Store
from metering.api.app import MAX_PAGE_LIMIT, create_api
from metering.local.services import LocalBroker, LocalClickHouse, free_port
from metering.settings import Settings
from schemas.catalog import Catalog, parse_catalog
from tests.builders import (
    LICENCE_PLAN,
    POWER_PLAN,
    PREMIUM_PLAN,
    account,
    billing_change,
    catalog,
    catalog_yaml,
)
from tests.closing import close_collecting as close

Client = httpx.AsyncClient

CATALOG_TEXT = catalog_yaml(
    account("team-acme", "2026-07-04"),
    account("team-daniel", "2018-07-04", plan="licences", units=45,
            billing_address={"country": "NL"}),
    plans={"power": POWER_PLAN, "licences": LICENCE_PLAN}, tax={"eu_vat": {"NL": "0.21"}},
)
CATALOG = parse_catalog(CATALOG_TEXT)
TOKENS = ("tok-one", "tok-two")
AUTH = {"Authorization": f"Bearer {TOKENS[1]}"}
JULY, AUGUST = date(2026, 7, 4), date(2026, 8, 4)
NOW = datetime(2026, 8, 10, 12, tzinfo=UTC)
# Ids that need escaping in a URL or sort unusually, so the cursor must travel intact.
AWKWARD_USERS = ["a b", "a+b", "a&after=x", "a/b", "%41", "é", "日本", "'quote", "z#frag"]
AUGUST_USERS = sorted([f"u{n:02d}" for n in range(16)] + AWKWARD_USERS)


def _users(team: str, period: date, names: list[str], at: datetime) -> list[ActiveUserRow]:
    return [ActiveUserRow(team, period, name, at + timedelta(minutes=n), f"e-{period}-{n}",
                          "timeclock", "login") for n, name in enumerate(names)]


def seed(store: Store) -> None:
    """July: 33 users of team-acme (28 above the 5 included); August so far: 25 users and
    their events; team-daniel's seed 004 licences with one immediate charge. Then the close
    as of 4 Aug 01:00 issues the invoices the API serves."""
    store.add_active_users(_users("team-acme", JULY, [f"j{n:02d}" for n in range(33)],
                                  datetime(2026, 7, 5, 9, tzinfo=UTC)))
    august = _users("team-acme", AUGUST, AUGUST_USERS, datetime(2026, 8, 5, 9, tzinfo=UTC))
    store.add_active_users(august)
    store.add_events([
        EventRow("team-acme", AUGUST, row.first_time.date(), kind, "timeclock",
                 f"{row.event_id}-{kind}", row.user_id, row.first_time)
        for row in august for kind in ("clock_in", "clock_out")
    ] + [EventRow("team-acme", AUGUST, date(2026, 8, 6), "login", "web", f"w{n}", "u00",
                  datetime(2026, 8, 6, 8, n, tzinfo=UTC)) for n in range(3)])
    store.add_changes([StoredChange.of(billing_change("team-daniel", "c1", "2019-01-18T09:30:00Z",
                                                "add_units", count=20))])
    close(store=store, catalog=CATALOG, as_of=datetime(2026, 8, 4, 1, tzinfo=UTC),
          grace=timedelta(hours=1), publish=lambda _invoice: None)


@pytest.fixture
def store(bare_store: Store) -> Store:
    bare_store.ensure_schema()
    seed(bare_store)
    return bare_store


def _client(store: Store, catalog: Catalog = CATALOG, tokens: tuple[str, ...] = TOKENS
            ) -> httpx.AsyncClient:
    app = create_api(settings=Settings(api_tokens=tokens), store=store, catalog=catalog,
                     registry=CollectorRegistry(), clock=lambda: NOW)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api",
                             headers=AUTH)


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(store) as opened:
        yield opened


async def test_missing_or_wrong_token_is_401_with_a_bearer_challenge(client: Client) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer nope"},
                    {"Authorization": "Basic dG9rLW9uZTo="}, {"Authorization": "Bearer tok-on"},
                    {"Authorization": "Bearer t\u00f6k".encode()}):
        answer = await client.get("/v1/teams/team-acme/periods/current", headers=headers)
        assert answer.status_code == 401, headers
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert set(answer.json()) == {"detail"}
    # unauthenticated requests learn nothing about teams or parameters
    answer = await client.get("/v1/teams/nobody", headers={"Authorization": ""})
    assert answer.status_code == 401
    for token in TOKENS:
        answer = await client.get("/v1/teams", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200
    for path in ("/healthz", "/metrics", "/openapi.json"):
        assert (await client.get(path, headers={"Authorization": ""})).status_code == 200, path


async def test_no_tokens_configured_means_open(store: Store) -> None:
    async with _client(store, tokens=()) as open_client:
        answer = await open_client.get("/v1/teams", headers={"Authorization": ""})
        assert answer.status_code == 200


async def test_openapi_declares_the_bearer_scheme_on_every_v1_operation(client: Client) -> None:
    doc = (await client.get("/openapi.json")).json()
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer",
        "description": "One of the tokens in METERING_API_TOKENS"}
    operations = {path: next(iter(item.values())) for path, item in doc["paths"].items()}
    assert "/healthz" in operations and "/metrics" not in operations
    for path, operation in operations.items():
        assert (operation.get("security") == [{"bearer": []}]) == path.startswith("/v1/"), path


async def test_teams_and_current_period(client: Client) -> None:
    teams = (await client.get("/v1/teams")).json()["teams"]
    assert [(t["team"], t["plan_kind"], t["anchor_day"]) for t in teams] == [
        ("team-acme", "mau", 4), ("team-daniel", "licence", 4)]
    current = (await client.get(teams[0]["links"]["current_period"])).json()
    assert current == {
        "team": "team-acme", "start": "2026-08-04", "end": "2026-09-04", "current": True,
        "mau": len(AUGUST_USERS),
        "links": {"users": "/v1/teams/team-acme/periods/2026-08-04/users",
                  "daily": "/v1/teams/team-acme/periods/2026-08-04/daily"}}
    july = (await client.get("/v1/teams/team-acme/periods/2026-07-04")).json()
    assert (july["mau"], july["end"], july["current"]) == (33, "2026-08-04", False)
    assert (await client.get("/v1/teams/team-acme")).json()["links"]["estimate"] == (
        "/v1/teams/team-acme/estimate")


@pytest.mark.parametrize("path", [
    "/v1/teams/team-x", "/v1/teams/team-x/periods/current", "/v1/teams/team-x/invoices",
    "/v1/teams/team-x/periods/2026-07-04/users", "/v1/teams/team-x/estimate",
    "/v1/teams/team-acme/invoices/2026-08-05", "/v1/teams/team-acme/invoices/2026-08-04"
    "?reference=crm/c1", "/v1/nothing-here",
])
async def test_unknown_team_or_invoice_is_404(client: Client, path: str) -> None:
    answer = await client.get(path)
    assert answer.status_code == 404
    assert list(answer.json()) == ["detail"] and isinstance(answer.json()["detail"], str)


@pytest.mark.parametrize(("path", "says"), [
    ("/v1/teams/team-acme/periods/2026-13-01", "path.start:"),
    ("/v1/teams/team-acme/periods/yesterday", "path.start:"),
    ("/v1/teams/team-acme/periods/2026-08-05", "not a period start of team 'team-acme': "
                                                "the period holding it starts on 2026-08-04"),
    ("/v1/teams/team-acme/periods/1969-12-04/daily", "period start 1969-12-04 is outside"),
    ("/v1/teams/team-acme/periods/9999-12-04/users", "period start 9999-12-04 is outside"),
    ("/v1/teams/team-acme/periods/0001-01-04", "period start 0001-01-04 is outside"),
    # ClickHouse 18.16 reads Date 1970-01-01 back as 0000-00-00 and no day after 2105
    ("/v1/teams/team-acme/periods/1970-01-04", "period start 1970-01-04 is outside "
                                               "1971-01-01..2104-12-31, the dates the store holds"),
    ("/v1/teams/team-acme/periods/1970-12-04/users", "period start 1970-12-04 is outside"),
    ("/v1/teams/team-acme/periods/2105-01-04/daily", "period start 2105-01-04 is outside"),
    ("/v1/teams/team-acme/invoices/1970-01-01", "invoice date 1970-01-01 is outside "
                                                "1971-01-01..2104-12-31"),
    ("/v1/teams/team-acme/invoices/9999-12-31?reference=crm/c1", "invoice date 9999-12-31"),
    ("/v1/teams/team-acme/periods/2026-08-04/users?limit=0", "query.limit:"),
    (f"/v1/teams/team-acme/periods/2026-08-04/users?limit={MAX_PAGE_LIMIT + 1}",
     "query.limit:"),
    ("/v1/teams/team-acme/periods/2026-08-04/users?limit=ten", "query.limit:"),
    (f"/v1/teams/team-acme/periods/2026-08-04/users?after={'x' * 257}", "query.after:"),
    ("/v1/teams/team-acme/invoices/2026-02-30", "path.invoice_date:"),
])
async def test_bad_parameters_are_422_with_one_line(client: Client, path: str,
                                                    says: str) -> None:
    answer = await client.get(path)
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert says in detail and "\n" not in detail


async def test_users_pages_follow_next_and_yield_every_user_once(client: Client) -> None:
    link: str | None = "/v1/teams/team-acme/periods/2026-08-04/users?limit=4"
    seen: list[str] = []
    pages = 0
    while link is not None:
        page = (await client.get(link)).json()
        assert len(page["users"]) <= 4
        seen.extend(user["user_id"] for user in page["users"])
        link, pages = page["next"], pages + 1
    assert pages == -(-len(AUGUST_USERS) // 4)
    assert sorted(seen) == AUGUST_USERS and len(seen) == len(set(seen))
    whole = (await client.get("/v1/teams/team-acme/periods/2026-08-04/users")).json()
    assert whole["next"] is None and [u["user_id"] for u in whole["users"]] == seen
    first = whole["users"][0]
    assert set(first) == {"user_id", "first_time", "event_id", "source", "type"}
    assert first["first_time"].endswith("Z") and first["type"] == "login"


async def test_users_are_searched_by_what_their_id_contains(client: Client) -> None:
    path = "/v1/teams/team-acme/periods/2026-08-04/users"
    wanted = [user for user in AUGUST_USERS if "1" in user]
    link: str | None = f"{path}?limit=2&contains=1"
    seen: list[str] = []
    while link is not None:
        page = (await client.get(link)).json()
        seen.extend(user["user_id"] for user in page["users"])
        link = page["next"]
        assert link is None or "contains=1" in link
    assert seen == wanted and len(wanted) > 2
    decomposed = (await client.get(path, params={"contains": "e\u0301"})).json()
    assert [u["user_id"] for u in decomposed["users"]] == [
        user for user in AUGUST_USERS if "\u00e9" in user]  # searched in normal form C
    assert (await client.get(path, params={"contains": "x" * 257})).status_code == 422


@pytest.mark.parametrize("after", ["nul\x00byte", "'); DROP TABLE active_users; --", "%(team)s",
                                   "\\", "😀", "u15", "zzzz"])
async def test_any_cursor_is_a_user_id_to_start_after(client: Client, after: str) -> None:
    answer = await client.get("/v1/teams/team-acme/periods/2026-08-04/users",
                              params={"after": after})
    assert answer.status_code == 200
    assert [u["user_id"] for u in answer.json()["users"]] == [
        user for user in AUGUST_USERS if user.encode() > after.encode()]


async def test_first_and_last_served_periods(client: Client) -> None:
    answer = await client.get("/v1/teams/team-acme/periods/1971-01-04/daily")
    assert (answer.status_code, answer.json()["days"]) == (200, [])
    answer = await client.get("/v1/teams/team-acme/periods/2104-12-04/users")
    assert (answer.status_code, answer.json()["period_end"]) == (200, "2105-01-04")


async def test_daily_active_users_and_events_per_type(client: Client) -> None:
    daily = (await client.get("/v1/teams/team-acme/periods/2026-08-04/daily")).json()
    assert (daily["period_start"], daily["period_end"]) == ("2026-08-04", "2026-09-04")
    by_key = {(d["day"], d["type"]): (d["events"], d["users"]) for d in daily["days"]}
    count = len(AUGUST_USERS)
    assert by_key == {("2026-08-05", "clock_in"): (count, count),
                      ("2026-08-05", "clock_out"): (count, count),
                      ("2026-08-06", "login"): (3, 1)}
    empty = (await client.get("/v1/teams/team-acme/periods/2026-06-04/daily")).json()
    assert empty["days"] == []


async def test_estimate_of_the_open_period(client: Client) -> None:
    answer = (await client.get("/v1/teams/team-acme/estimate")).json()
    assert answer["as_of"] == "2026-08-10T12:00:00Z"
    invoice = answer["invoice"]
    assert (invoice["invoice_date"], invoice["total"]) == ("2026-09-04", "50.00")
    assert [(ln["kind"], ln["quantity"], ln["why"]) for ln in invoice["lines"]] == [
        ("base", "1", "/v1/teams/team-acme/periods/2026-09-04"),
        ("overage", "20", "/v1/teams/team-acme/periods/2026-08-04/users"),
    ]
    assert invoice["link"] == "/v1/teams/team-acme/estimate"
    assert (await client.get(invoice["lines"][0]["why"])).json()["mau"] == 0
    licences = (await client.get("/v1/teams/team-daniel/estimate")).json()["invoice"]
    assert licences["invoice_date"] == "2027-07-04"


async def test_invoices_with_why_links_that_resolve(client: Client) -> None:
    invoices = (await client.get("/v1/teams/team-acme/invoices")).json()["invoices"]
    assert [(inv["invoice_date"], inv["total"]) for inv in invoices] == [
        ("2026-07-04", "10.00"), ("2026-08-04", "66.00")]
    august = invoices[1]
    assert [(ln["kind"], ln["why"]) for ln in august["lines"]] == [
        ("base", "/v1/teams/team-acme/periods/2026-08-04"),
        ("overage", "/v1/teams/team-acme/periods/2026-07-04/users"),
    ]
    assert august["usage"] == [
        {"period_start": "2026-07-04", "period_end": "2026-08-04", "active_users": 33}]
    overage = (await client.get(august["lines"][1]["why"], params={"limit": MAX_PAGE_LIMIT}))
    assert len(overage.json()["users"]) == 33  # the 28 above 5 included, user by user
    assert (await client.get(august["link"])).json() == august

    licences = (await client.get("/v1/teams/team-daniel/invoices")).json()["invoices"]
    immediate = next(inv for inv in licences if inv["reference"] == "crm/c1")
    assert immediate["link"] == "/v1/teams/team-daniel/invoices/2019-01-18?reference=crm%2Fc1"
    assert [(ln["kind"], ln["why"]) for ln in immediate["lines"]] == [
        ("proration", "/v1/teams/team-daniel/changes"), ("tax", immediate["link"])]
    assert (await client.get(immediate["link"])).json() == immediate
    for invoice in [*invoices, *licences]:
        for line in invoice["lines"]:
            assert (await client.get(line["why"])).status_code == 200, line


async def test_stored_invoice_json_is_unchanged(client: Client, store: Store) -> None:
    await client.get("/v1/teams/team-acme/invoices")
    assert all('"why"' not in inv.body for inv in store.invoices())


async def test_changes_as_stored(client: Client) -> None:
    changes = (await client.get("/v1/teams/team-daniel/changes")).json()
    assert changes["team"] == "team-daniel"
    [change] = changes["changes"]
    assert (change["source"], change["id"], change["type"], change["time"]) == (
        "crm", "c1", "add_units", "2019-01-18T09:30:00Z")
    assert change["change"]["data"]["count"] == 20
    assert change["change"]["subject"] == "team-daniel"
    assert (await client.get("/v1/teams/team-acme/changes")).json()["changes"] == []


async def test_a_history_the_catalog_no_longer_allows_is_409(store: Store) -> None:
    seats = catalog(account("team-seats", "2026-06-01", plan="premium", units=50, members=50),
                    plans={"premium": PREMIUM_PLAN})
    # stored while the catalog allowed it; one more member than seats now
    store.add_changes([StoredChange.of(billing_change("team-seats", "m1", "2026-07-01T10:00:00Z",
                                                "member_added"))])
    async with _client(store, catalog=seats) as client:
        answer = await client.get("/v1/teams/team-seats/estimate")
        assert answer.status_code == 409
        assert "50 seats is below the 51 current members" in answer.json()["detail"]
        assert (await client.get("/v1/teams/team-seats/changes")).status_code == 200


async def test_unreachable_store_is_503() -> None:
    store = open_store(f"clickhouse://127.0.0.1:{free_port()}/metering")
    try:
        async with _client(store) as client:
            for path in ("/v1/teams/team-acme/periods/current", "/v1/teams/team-acme/invoices",
                         "/v1/teams/team-acme/estimate"):
                answer = await client.get(path)
                assert answer.status_code == 503, path
                assert answer.json() == {"detail": "store unavailable; try again later"}
            assert (await client.get("/healthz")).status_code == 200
    finally:
        store.close()


# `metering serve` as a real process


@dataclass
class Serving:
    """A `metering serve` process on a free port, its log in a file (a pipe nobody reads
    would fill up and stall the server)."""

    process: subprocess.Popen[bytes]
    base: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log()
            try:
                if httpx.get(f"{self.base}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"serve did not answer within {timeout}s: {self.log()}")

    def stop(self) -> str:
        """SIGTERM by PID; the process exits 0 and its log holds no traceback."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        log = self.log()
        assert self.process.returncode == 0, log
        assert "Traceback" not in log
        return log


def start_serve(folder: Path, store_url: str, **env: str) -> Serving:
    catalog = folder / "catalog.yaml"
    catalog.write_text(CATALOG_TEXT)
    port = free_port()
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("METERING_")},
        "METERING_STORE_URL": store_url, "METERING_CATALOG": str(catalog),
        "METERING_API_TOKENS": ",".join(TOKENS), "METERING_LOG_LEVEL": "info", **env,
    }
    log_path = folder / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "metering.cli", "serve", "--port", str(port)],
            env=environment, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )
    return Serving(process, f"http://127.0.0.1:{port}", log_path)


def server_store(server: LocalClickHouse) -> tuple[str, Store]:
    url = f"clickhouse://127.0.0.1:{server.tcp_port}/serve_{uuid.uuid4().hex}"
    store = open_store(url)
    store.ensure_schema()
    return url, store


def test_metering_serve_process(clickhouse_server: LocalClickHouse, tmp_path: Path) -> None:
    url, store = server_store(clickhouse_server)
    try:
        seed(store)
    finally:
        store.close()
    serving = start_serve(tmp_path, url, METERING_TOP_TEAMS_METRIC="5")
    try:
        serving.wait_healthy()
        metrics = httpx.get(f"{serving.base}/metrics").text
        assert 'metering_close_runs_total{outcome="ok"} 0.0' in metrics
        assert 'metering_team_mau{team="team-acme"}' in metrics
        assert httpx.get(f"{serving.base}/v1/teams").status_code == 401
        teams = httpx.get(f"{serving.base}/v1/teams", headers=AUTH).json()["teams"]
        assert [team["team"] for team in teams] == ["team-acme", "team-daniel"]
        july = httpx.get(f"{serving.base}/v1/teams/team-acme/periods/2026-07-04", headers=AUTH)
        assert july.json()["mau"] == 33
    finally:
        log = serving.stop()
    assert all(json.loads(line)["level"] for line in log.splitlines())  # JSON log lines


def test_serve_closes_periodically(clickhouse_server: LocalClickHouse, broker: LocalBroker,
                                   tmp_path: Path) -> None:
    url, store = server_store(clickhouse_server)
    try:
        store.add_active_users(_users("team-acme", JULY, ["a", "b"],
                                      datetime(2026, 7, 5, tzinfo=UTC)))
    finally:
        store.close()
    serving = start_serve(tmp_path, url, METERING_BROKER_URL=broker.url,
                          METERING_CLOSE_INTERVAL_SECONDS="0.5")
    try:
        serving.wait_healthy()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            metrics = httpx.get(f"{serving.base}/metrics").text
            if 'metering_close_runs_total{outcome="ok"} 0.0' not in metrics:
                break
            time.sleep(0.2)
        assert 'metering_close_runs_total{outcome="error"} 0.0' in metrics
        answer = httpx.get(f"{serving.base}/v1/teams/team-acme/invoices", headers=AUTH)
        assert [inv["invoice_date"] for inv in answer.json()["invoices"]][:2] == [
            "2026-07-04", "2026-08-04"]
    finally:
        serving.stop()


def test_serve_refuses_an_open_api_off_loopback(tmp_path: Path) -> None:
    serving = start_serve(tmp_path, "clickhouse://127.0.0.1:1/metering",
                          METERING_API_TOKENS="", METERING_API_HOST="0.0.0.0")  # noqa: S104
    assert serving.process.wait(timeout=30) == 2
    assert serving.log().splitlines() == [
        "metering: error: no API tokens: refusing to serve on 0.0.0.0 without authentication; "
        "set METERING_API_TOKENS (comma-separated bearer tokens) or use a loopback host"]
