"""The usage page (metering/api/ui.py) in process: the page and its static files are served,
the page needs a token (cookie or bearer header) and answers 401 without one, and the login
form posts the token to `POST /ui/login`, which sets the cookie the page's script sends to
/v1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import unquote

import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from aggregation import MemoryStore
from metering.api.app import create_api
from metering.api.ui import COOKIE
from metering.settings import Settings
from tests.builders import account, catalog

Client = httpx.AsyncClient
TOKEN = "tok-ui"  # noqa: S105 - a test token
CATALOG = catalog(account("team-a", "2026-07-04"))


def _client(tokens: tuple[str, ...] = (TOKEN,)) -> Client:
    store = MemoryStore()
    store.ensure_schema()
    settings = Settings(api_tokens=tuple(SecretStr(token) for token in tokens))
    app = create_api(settings=settings, store=store, catalog=CATALOG,
                     registry=CollectorRegistry())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    async with _client() as opened:
        yield opened


async def test_page_needs_a_token(client: Client) -> None:
    answer = await client.get("/ui/teams/team-a")
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    wrong = await client.get("/ui/teams/team-a", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    client.cookies.set(COOKIE, "nope")
    assert (await client.get("/ui/teams/team-a")).status_code == 401


async def test_page_with_a_bearer_header_sets_the_cookie_for_its_script(client: Client) -> None:
    answer = await client.get("/ui/teams/team-a", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert 'id="mau"' in answer.text and "/ui/static/usage.js" in answer.text
    assert answer.cookies[COOKIE] == TOKEN
    assert "cdn" not in answer.text.lower() and "https://" not in answer.text


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def test_cookie_login_then_the_page(client: Client) -> None:
    form = await client.get("/ui/login", params={"team": 'team-a"><script>'})
    assert form.status_code == 200 and 'method="post"' in form.text
    assert "<script>" not in form.text and "&quot;&gt;&lt;script&gt;" in form.text
    assert (await client.post("/ui/login", data={"token": "nope"})).status_code == 401
    assert (await client.post("/ui/login", data={"team": "team-a"})).status_code == 401
    login = await client.post("/ui/login", data={"token": TOKEN, "team": "team-a"})
    assert login.status_code == 303
    assert login.headers["location"] == "/ui/teams/team-a"
    assert "samesite=strict" in login.headers["set-cookie"].lower()
    assert client.cookies[COOKIE] == TOKEN
    page = await client.get("/ui/teams/team-a")
    assert page.status_code == 200
    # the cookie authenticates the page only; /v1 still takes the bearer header
    assert (await client.get("/v1/teams")).status_code == 401


async def test_the_token_never_travels_in_a_url(client: Client) -> None:
    """A token in the query string is not a login (it would stay in access logs and the
    browser's history): the form posts it."""
    answer = await client.get("/ui/login", params={"token": TOKEN, "team": "team-a"})
    assert answer.status_code == 200 and COOKIE not in answer.cookies
    assert TOKEN not in answer.text


@pytest.mark.parametrize(("body", "headers", "status"), [
    ("token=x", {"Content-Type": "application/json"}, 415),
    ("token=" + "x" * 5000, FORM, 413),
    ("&".join(f"f{n}=1" for n in range(20)), FORM, 400),
])
async def test_bad_login_forms(client: Client, body: str, headers: dict[str, str],
                               status: int) -> None:
    answer = await client.post("/ui/login", content=body, headers=headers)
    assert answer.status_code == status
    assert "\n" not in answer.json()["detail"]


async def test_any_token_survives_the_cookie(client: Client) -> None:
    """A base64 token (`/`, `+`, `=`) or one with `%` and `;` comes back from the cookie as
    it went in, percent-encoded so that the page's script reads it whole."""
    for token in ("abc/def+g==", "50%zz;x y", "tok-ui"):
        async with _client(tokens=(token,)) as opened:
            login = await opened.post("/ui/login", data={"token": token, "team": "team-a"})
            assert login.status_code == 303, token
            raw = login.headers["set-cookie"].split(";")[0].partition("=")[2]
            assert '"' not in raw and unquote(raw) == token
            assert (await opened.get("/ui/teams/team-a")).status_code == 200


async def test_a_login_from_another_site_is_refused(client: Client) -> None:
    fields = {"token": TOKEN, "team": "team-a"}
    other = await client.post("/ui/login", data=fields,
                              headers={"Origin": "https://evil.example"})
    assert other.status_code == 403 and COOKIE not in other.cookies
    hidden = await client.post("/ui/login", data=fields, headers={"Origin": "null"})
    assert hidden.status_code == 403
    own = await client.post("/ui/login", data=fields, headers={"Origin": "http://api"})
    assert own.status_code == 303


async def test_unknown_team_is_404(client: Client) -> None:
    client.cookies.set(COOKIE, TOKEN)
    assert (await client.get("/ui/teams/team-zz")).status_code == 404


@pytest.mark.parametrize(("name", "media_type"), [
    ("usage.js", "text/javascript"), ("chart.js", "text/javascript"), ("usage.css", "text/css"),
])
async def test_static_files_are_served_offline(client: Client, name: str, media_type: str
                                               ) -> None:
    answer = await client.get(f"/ui/static/{name}")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith(media_type)
    assert answer.text.strip() and "https://" not in answer.text


@pytest.mark.parametrize("name", ["usage.html", "../ui.py", "nope.js"])
async def test_only_the_listed_static_files(client: Client, name: str) -> None:
    assert (await client.get(f"/ui/static/{name}")).status_code == 404


async def test_open_api_serves_the_page_without_a_token() -> None:
    async with _client(tokens=()) as client:
        assert (await client.get("/ui/teams/team-a")).status_code == 200
        assert (await client.post("/ui/login", data={"token": "x"})).status_code == 200
