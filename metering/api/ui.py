"""The usage page of `metering serve`: `GET /ui/teams/{team}` serves one static HTML page that
reads the JSON API (/v1) in the browser with the same tokens, and `GET /ui/static/{name}` its
script, stylesheet and SVG chart (metering/api/static, shipped as package data; no CDN, so
the page works offline). `GET /ui/login[?team=]` is a form that posts the token to
`POST /ui/login` (form fields `token`, `team`), which sets the `metering_token` cookie the
page's script sends back as a bearer token and redirects to the team's page: the token never
stands in a URL, so neither access logs nor the browser's history keep it. The page itself
needs the token too (cookie or `Authorization: Bearer`) and answers 401 without it."""

from __future__ import annotations

from html import escape
from importlib.resources import files
from typing import Annotated, Final
from urllib.parse import parse_qs, quote, unquote, urlsplit

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from metering.api.bodies import limited_body
from metering.api.tokens import token_matches

__all__ = ["COOKIE", "ui_router"]

COOKIE = "metering_token"
_STATIC = {
    "usage.js": "text/javascript; charset=utf-8",
    "usage.css": "text/css; charset=utf-8",
    "chart.js": "text/javascript; charset=utf-8",
}


# A login form is a few hundred bytes: anything longer is not one
_MAX_FORM_BYTES: Final = 4096
_FORM_TYPE: Final = "application/x-www-form-urlencoded"
_LOGIN_FORM: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>metering: log in</title>
<link rel="stylesheet" href="/ui/static/usage.css"></head>
<body><h1>Log in</h1>
<form method="post" action="/ui/login">
<p><label>Token <input name="token" type="password" autocomplete="current-password"
required></label></p>
<p><label>Team <input name="team" value="{team}" required></label></p>
<p><button type="submit">Show usage</button></p>
</form></body></html>
"""


def _static_text(name: str) -> str:
    return files("metering.api").joinpath("static", name).read_text(encoding="utf-8")


def _tokens(request: Request) -> tuple[bytes, ...]:
    tokens: tuple[bytes, ...] = request.app.state.metering.tokens
    return tokens


def _given_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials:
        return credentials.strip()
    return _cookie_token(request)


def _cookie_token(request: Request) -> str | None:
    cookie = request.cookies.get(COOKIE)
    return None if cookie is None else unquote(cookie)


def _require_token(request: Request) -> str | None:
    """The token the request carries, checked; None when the API is open (no tokens)."""
    tokens = _tokens(request)
    given = _given_token(request)
    if not tokens:
        return given
    if given is None:
        raise HTTPException(401, "token required: log in at /ui/login (a metering_token "
                            "cookie) or send a bearer token",
                            headers={"WWW-Authenticate": "Bearer"})
    if not token_matches(given, tokens):
        raise HTTPException(401, "invalid token",
                            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return given


def _set_cookie(response: Response, token: str) -> None:
    # Readable by the page's script (it sends the token as a bearer header to /v1); strict
    # same-site so no other site's request carries it.
    # Percent-encoded, so that no token character makes the cookie a quoted string that the
    # script would read with its quotes (the script decodes it, the server unquotes it).
    response.set_cookie(COOKIE, quote(token, safe=""), path="/", samesite="strict",
                        httponly=False)


def _same_origin(request: Request) -> bool:
    """No Origin header (not a browser's cross-site post), or this server's own host: a
    login posted from another site would log the browser in with that site's token."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc.lower() == request.headers.get("host", "").lower()


def ui_router() -> APIRouter:
    """The page, its static files and the cookie login."""
    router = APIRouter(prefix="/ui", include_in_schema=False)

    @router.get("/login")
    def login_form(team: Annotated[str, Query(max_length=200)] = "") -> HTMLResponse:
        return HTMLResponse(_LOGIN_FORM.format(team=escape(team, quote=True)),
                            headers={"Cache-Control": "no-store"})

    @router.post("/login")
    async def login(request: Request) -> Response:
        if not _same_origin(request):
            raise HTTPException(403, "a login must be posted from this server's own form")
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media != _FORM_TYPE:
            raise HTTPException(415, f"Content-Type must be {_FORM_TYPE} (the login form)")
        body = await limited_body(request, _MAX_FORM_BYTES,
                                  f"a login form is at most {_MAX_FORM_BYTES} bytes")
        try:
            fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)
        except ValueError:
            raise HTTPException(400, "a login form has the fields token and team") from None
        token = (fields.get("token") or [""])[0]
        team = (fields.get("team") or [""])[0].strip()
        tokens = _tokens(request)
        if not token or (tokens and not token_matches(token, tokens)):
            raise HTTPException(401, "invalid token",
                                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        response: Response
        if team:
            response = RedirectResponse(f"/ui/teams/{quote(team, safe='')}", status_code=303)
        else:
            response = HTMLResponse("<!doctype html><title>metering</title><p>Logged in.</p>")
        _set_cookie(response, token)
        return response

    @router.get("/teams/{team}")
    def team_page(request: Request, team: str) -> HTMLResponse:
        token = _require_token(request)
        if request.app.state.metering.catalog.account(team) is None:
            raise HTTPException(404, f"unknown team {team!r}: not in the catalog")
        response = HTMLResponse(_static_text("usage.html"),
                                headers={"Cache-Control": "no-store"})
        if token is not None and _cookie_token(request) != token:
            _set_cookie(response, token)  # a header-authenticated load: the script needs it
        return response

    @router.get("/static/{name}")
    def static(name: str) -> Response:
        media_type = _STATIC.get(name)
        if media_type is None:
            raise HTTPException(404, f"no static file {name!r}")
        return Response(_static_text(name), media_type=media_type)

    return router
