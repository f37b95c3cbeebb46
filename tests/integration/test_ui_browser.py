"""The usage page in headless Chromium (Debian's `chromium`, driven by Playwright with its
executable path; no browser download): a real `metering serve` on a ClickHouse server with
team-acme's usage and July's issued invoice. The numbers on the page equal the API's, a click
on the overage line lists the users of the period it billed, and a screenshot is written to
the test's temp folder."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, sync_playwright

from aggregation.store import EventRow, Store
from metering.local.services import LocalClickHouse
from tests.integration.test_api import (
    AUTH,
    CATALOG,
    TOKENS,
    _users,
    seed,
    server_store,
    start_serve,
)

TEAM = "team-acme"
CURRENT_USERS = [f"now{n:02d}" for n in range(7)]


def _seed_current_period(url_store: Store) -> None:
    """Users and events in the open period of the real clock (serve reads the real time)."""
    account = CATALOG.account(TEAM)
    assert account is not None
    now = datetime.now(UTC)
    start = account.calendar.period_containing(now).start
    at = now - timedelta(hours=2)
    rows = _users(TEAM, start, CURRENT_USERS, at)
    url_store.add_active_users(rows)
    url_store.add_events([EventRow(TEAM, start, row.first_time.date(), "clock_in", "timeclock",
                                   f"{row.event_id}-in", row.user_id, row.first_time)
                          for row in rows])


def _api(base: str, path: str) -> Any:
    answer = httpx.get(f"{base}{path}", headers=AUTH, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _all_users(base: str, path: str) -> list[str]:
    users: list[str] = []
    following: str | None = f"{path}?limit=10"
    while following:
        page = _api(base, following)
        users += [user["user_id"] for user in page["users"]]
        following = page["next"]
    return users


def _text(page: Page, selector: str) -> str:
    return page.locator(selector).inner_text().strip()


def test_usage_page_in_headless_chromium(clickhouse_server: LocalClickHouse,
                                         tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    assert chromium is not None, "Debian's chromium is not installed (make system-deps)"
    url, store = server_store(clickhouse_server)
    try:
        seed(store)
        _seed_current_period(store)
    finally:
        store.close()
    serving = start_serve(tmp_path, url)
    try:
        serving.wait_healthy()
        base, team_path = serving.base, f"/v1/teams/{TEAM}"
        period = _api(base, f"{team_path}/periods/current")
        estimate = _api(base, f"{team_path}/estimate")
        invoices = _api(base, f"{team_path}/invoices")["invoices"]
        access = _api(base, f"{team_path}/access")
        overage = [(invoice, line) for invoice in invoices for line in invoice["lines"]
                   if line["kind"] == "overage"]
        assert period["mau"] == len(CURRENT_USERS) and overage
        why = overage[0][1]["why"]
        assert why.endswith("/periods/2026-07-04/users")
        july_users = _all_users(base, why)
        assert len(july_users) == 33

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True,
                                                 args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1200, "height": 900})
                # without the token: 401, no page
                refused = page.goto(f"{base}/ui/teams/{TEAM}")
                assert refused is not None and refused.status == 401
                page.goto(f"{base}/ui/login?team={TEAM}")  # the login form
                page.fill("input[name=token]", TOKENS[0])
                with page.expect_navigation():
                    page.click("button[type=submit]")
                assert page.url == f"{base}/ui/teams/{TEAM}"
                page.wait_for_selector("body[data-loaded=true]")
                assert not page.locator("#error").is_visible(), _text(page, "#error")

                assert _text(page, "#mau") == str(period["mau"])
                assert _text(page, "#period") == f"{period['start']} to {period['end']}"
                invoice = estimate["invoice"]
                assert _text(page, "#estimate") == f"{invoice['total']} {invoice['currency']}"
                assert _text(page, "#state") == access["state"]
                totals = page.locator(".invoice .total").all_inner_texts()
                assert totals == [f"{i['total']} {i['currency']}" for i in invoices]
                assert page.locator("tr.user").count() == len(CURRENT_USERS)
                assert page.locator("#chart svg rect.bar").count() > 0

                page.goto(f"{base}/ui/teams/{TEAM}?limit=3")  # the users in pages of 3
                page.wait_for_selector("body[data-loaded=true]")
                for shown in (3, 6, 7):
                    page.wait_for_function(
                        f"document.querySelectorAll('tr.user').length === {shown}")
                    if shown < len(CURRENT_USERS):
                        page.locator("#more").click()
                assert page.locator("tr.user td:first-child").all_inner_texts() == CURRENT_USERS
                assert not page.locator("#more").is_visible()

                # the search asks the server: it finds a user the loaded page does not hold
                page.reload()
                page.wait_for_selector("body[data-loaded=true]")
                assert page.locator("tr.user").count() == 3
                last = CURRENT_USERS[-1]
                page.locator("#search").fill(last)
                page.wait_for_selector(f'#users[data-search="{last}"]')
                assert page.locator("tr.user td:first-child").all_inner_texts() == [last]
                assert not page.locator("#more").is_visible()
                page.locator("#search").fill("")
                page.wait_for_selector('#users[data-search=""]')
                assert page.locator("tr.user").count() == 3

                page.locator("tr.line[data-kind=overage]").first.click()
                page.wait_for_function(
                    "document.querySelectorAll('#why-users li').length > 0")
                listed = page.locator("#why-users li.why-user").all_inner_texts()
                assert listed == july_users
                page.screenshot(path=str(tmp_path / "usage.png"), full_page=True)
            finally:
                browser.close()
        assert (tmp_path / "usage.png").stat().st_size > 0
    finally:
        serving.stop()
