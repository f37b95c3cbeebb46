"""The read API of `metering serve`: periods, counted users, daily usage, the running
estimate, issued invoices and credit notes with the aggregate behind every line, billing
changes, each team's access (asked before a login) and the teams of a billing account.

`POST /v1/events` takes activity events as CloudEvents over HTTP (metering/api/ingest.py).

Everything under /v1 needs a bearer token from `METERING_API_TOKENS` (with none configured the
API is open, which `metering serve` allows on a loopback address only); /healthz, /metrics and
/openapi.json do not. Teams are the catalog's accounts. Links in answers are absolute paths on
this server. Handlers are thin: resolve the team and period, ask the store or the close module,
shape the answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from aggregation import Store, StoredInvoice, StoreError
from invoicing import Access, CloseError, estimate, read_access
from metering.api.event_sink import EventSink
from metering.api.ingest import ingest_router
from metering.api.ledger import LedgerOut, ledger_view
from metering.api.models import (
    AccessOut,
    AccountOut,
    AccountTeamOut,
    ChangeList,
    ChangeOut,
    CreditedOut,
    DailyOut,
    DayOut,
    ErrorBody,
    EstimateOut,
    Health,
    InvoiceList,
    InvoiceOut,
    LineOut,
    PeriodLinks,
    PeriodOut,
    TeamLinks,
    TeamList,
    TeamOut,
    UserOut,
    UsersPage,
)
from metering.api.rerate import rerate_router
from metering.api.tokens import token_matches
from metering.api.ui import ui_router
from metering.metrics import IngestMetrics, LedgerCollector
from metering.reconcile import period_problem
from metering.settings import Settings
from schemas import Account, Catalog, Invoice, InvoiceLine, Period, date_problem, normal_user_id

__all__ = [
    "DEFAULT_PAGE_LIMIT",
    "MAX_PAGE_LIMIT",
    "Clock",
    "create_api",
]

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
DEFAULT_PAGE_LIMIT = 100
MAX_PAGE_LIMIT = 1000
MAX_CURSOR_LENGTH = 256  # a user id is at most 256 characters (event contract)
# "source/id" (each at most 256) of an immediate charge, "refund/source/id" of a credit
# note: at most the 600 characters of schemas.InvoiceRef.reference
MAX_REFERENCE_LENGTH = 600
DEFAULT_RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True)
class _Context:
    store: Store
    catalog: Catalog
    clock: Clock
    tokens: tuple[bytes, ...]


def _context(request: Request) -> _Context:
    context: _Context = request.app.state.metering
    return context


Ctx = Annotated[_Context, Depends(_context)]
_BEARER = HTTPBearer(scheme_name="bearer", auto_error=False,
                     description="One of the tokens in METERING_API_TOKENS")


def _authorize(
    ctx: Ctx,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
) -> None:
    if not ctx.tokens:
        return
    if credentials is None:
        raise HTTPException(401, "bearer token required", headers={"WWW-Authenticate": "Bearer"})
    if not token_matches(credentials.credentials, ctx.tokens):
        raise HTTPException(401, "invalid bearer token",
                            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


def _team_path(team: str) -> str:
    return f"/v1/teams/{quote(team, safe='')}"


def _period_path(team: str, start: date) -> str:
    return f"{_team_path(team)}/periods/{start.isoformat()}"


def _current_period(account: Account, now: datetime) -> Period:
    return account.calendar.period_containing(now)


def _account(ctx: Ctx, team: Annotated[str, Path(description="A team of the catalog")]) -> Account:
    account = ctx.catalog.account(team)
    if account is None:
        raise HTTPException(404, f"unknown team {team!r}: not in the catalog")
    return account


AccountDep = Annotated[Account, Depends(_account)]


def _period(
    account: AccountDep,
    start: Annotated[date, Path(description="The period's first local date (YYYY-MM-DD)")],
) -> Period:
    problem = period_problem(account, start)
    if problem:
        raise HTTPException(422, problem)
    return Period(start, account.calendar.period_for_date(start).end)


PeriodDep = Annotated[Period, Depends(_period)]


def _team_view(ctx: _Context, account: Account) -> TeamOut:
    plan = ctx.catalog.plans[account.plan]
    path = _team_path(account.team)
    return TeamOut(
        team=account.team, plan=account.plan, plan_kind=plan.kind, currency=plan.currency,
        timezone=account.timezone, start_date=account.start_date, anchor_day=account.anchor_day,
        links=TeamLinks(current_period=f"{path}/periods/current", invoices=f"{path}/invoices",
                        estimate=f"{path}/estimate", changes=f"{path}/changes",
                        access=f"{path}/access"),
    )


def _period_view(ctx: _Context, account: Account, period: Period) -> PeriodOut:
    today = account.calendar.local_date(ctx.clock())
    path = _period_path(account.team, period.start)
    return PeriodOut(
        team=account.team, start=period.start, end=period.end,
        current=period.contains_date(today), mau=ctx.store.mau(account.team, period.start),
        links=PeriodLinks(users=f"{path}/users", daily=f"{path}/daily"),
    )


def _why(ctx: _Context, account: Account, line: InvoiceLine, invoice_link: str,
         credited_link: str | None) -> str:
    """Overage and late-usage lines of MAU plans come from the period's counted users, base
    fees and minimums from the period; licence, seat and tier charges from the stored
    changes; tax from the invoice's own lines; every line of a credit note from the invoice
    it credits (it mirrors that invoice's lines)."""
    if credited_link is not None:
        return credited_link
    if line.kind == "tax":
        return invoice_link
    if not ctx.catalog.plans[account.plan].rated_from_usage:
        return f"{_team_path(account.team)}/changes"
    if period_problem(account, line.service_start) is not None:
        return invoice_link  # a catalog edit moved the anchor since this invoice
    path = _period_path(account.team, line.service_start)
    return f"{path}/users" if line.kind in ("overage", "adjustment") else path


def _invoice_view(ctx: _Context, account: Account, invoice: Invoice, link: str) -> InvoiceOut:
    credited = invoice.credits
    credits = None if credited is None else CreditedOut(
        **credited.model_dump(),
        link=_invoice_link(invoice.team, credited.invoice_date, credited.reference))
    credited_link = None if credits is None else credits.link
    return InvoiceOut(
        team=invoice.team, invoice_date=invoice.invoice_date, reference=invoice.reference,
        document=invoice.document, number=invoice.number, credits=credits,
        currency=invoice.currency, subtotal=invoice.subtotal, tax=invoice.tax,
        total=invoice.total, usage=list(invoice.usage), payment_terms=invoice.payment_terms,
        due_date=invoice.due_date, link=link,
        lines=[LineOut(**line.model_dump(),
                       why=_why(ctx, account, line, link, credited_link))
               for line in invoice.lines],
    )


def _invoice_link(team: str, invoice_date: date, reference: str) -> str:
    path = f"{_team_path(team)}/invoices/{invoice_date.isoformat()}"
    return f"{path}?{urlencode({'reference': reference})}" if reference else path


def _stored_view(ctx: _Context, account: Account, stored: StoredInvoice) -> InvoiceOut:
    invoice = Invoice.model_validate_json(stored.body)
    return _invoice_view(ctx, account, invoice,
                         _invoice_link(stored.team, stored.invoice_date, stored.reference))


def _access_view(access: Access) -> AccessOut:
    since = None if access.since is None else access.since.astimezone(UTC)
    return AccessOut(team=access.team, state=access.state, since=since, why=access.why,
                     login_allowed=access.login_allowed,
                     billing_paused_until=access.billing_paused_until)


router = APIRouter(prefix="/v1")
_UNKNOWN: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "Unknown team"},
}


@router.get("/teams", tags=["teams"])
def list_teams(ctx: Ctx) -> TeamList:
    """The teams of the catalog, with links to their data."""
    return TeamList(teams=[_team_view(ctx, account) for account in ctx.catalog.accounts])


@router.get("/teams/{team}", tags=["teams"], responses=_UNKNOWN)
def get_team(ctx: Ctx, account: AccountDep) -> TeamOut:
    """One team: plan, billing zone and anchor."""
    return _team_view(ctx, account)


@router.get("/teams/{team}/periods/current", tags=["usage"], responses=_UNKNOWN)
def get_current_period(ctx: Ctx, account: AccountDep) -> PeriodOut:
    """The open period of the team (by its billing time zone) and its MAU so far."""
    return _period_view(ctx, account, _current_period(account, ctx.clock()))


@router.get("/teams/{team}/periods/{start}", tags=["usage"], responses=_UNKNOWN)
def get_period(ctx: Ctx, account: AccountDep, period: PeriodDep) -> PeriodOut:
    """A period by its start date, and its MAU."""
    return _period_view(ctx, account, period)


@router.get("/teams/{team}/periods/{start}/users", tags=["usage"], responses=_UNKNOWN)
def list_period_users(
    ctx: Ctx,
    account: AccountDep,
    period: PeriodDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_LIMIT)] = DEFAULT_PAGE_LIMIT,
    after: Annotated[str | None, Query(max_length=MAX_CURSOR_LENGTH,
                                       description="The last user id of the previous page")]
    = None,
    contains: Annotated[str, Query(max_length=MAX_CURSOR_LENGTH, description=(
        "Only user ids containing this text (exact, case-sensitive, in normal form C)"))]
    = "",
) -> UsersPage:
    """The users counted in the period with their first event, ordered by user id; with
    `contains`, those whose id contains that text."""
    needle = normal_user_id(contains)
    rows = ctx.store.active_users(account.team, period.start, after=after, limit=limit + 1,
                                  containing=needle)
    page = rows[:limit]
    following = None
    if len(rows) > limit:
        query = urlencode({"limit": limit, "after": page[-1].user_id,
                           **({"contains": needle} if needle else {})})
        following = f"{_period_path(account.team, period.start)}/users?{query}"
    return UsersPage(
        team=account.team, period_start=period.start, period_end=period.end, next=following,
        users=[UserOut(user_id=row.user_id, first_time=row.first_time, event_id=row.event_id,
                       source=row.source, type=row.event_type) for row in page],
    )


@router.get("/teams/{team}/periods/{start}/daily", tags=["usage"], responses=_UNKNOWN)
def get_period_daily(ctx: Ctx, account: AccountDep, period: PeriodDep) -> DailyOut:
    """Distinct events and active users per local day and event type."""
    days = ctx.store.daily_usage(account.team, period.start)
    return DailyOut(
        team=account.team, period_start=period.start, period_end=period.end,
        days=[DayOut(day=d.day, type=d.event_type, events=d.events, users=d.users) for d in days],
    )


@router.get("/teams/{team}/periods/{start}/ledger", tags=["usage"], responses=_UNKNOWN)
def get_period_ledger(ctx: Ctx, account: AccountDep, period: PeriodDep) -> LedgerOut:
    """The period's conservation ledger: what arrived, what became of it, what was billed,
    and whether each identity holds (a violation is an answer, not an error)."""
    return ledger_view(ctx.store, account, period.start)


@router.get("/teams/{team}/estimate", tags=["invoices"], responses={
    **_UNKNOWN,
    409: {"model": ErrorBody, "description": "The stored billing history no longer applies"},
})
def get_estimate(ctx: Ctx, account: AccountDep) -> EstimateOut:
    """The invoice the next billing date would issue if the open period ended now."""
    now = ctx.clock()
    invoice = estimate(store=ctx.store, catalog=ctx.catalog, team=account.team, now=now)
    link = f"{_team_path(account.team)}/estimate"
    return EstimateOut(
        team=account.team, as_of=now,
        invoice=None if invoice is None else _invoice_view(ctx, account, invoice, link),
    )


@router.get("/teams/{team}/invoices", tags=["invoices"], responses=_UNKNOWN)
def list_invoices(ctx: Ctx, account: AccountDep) -> InvoiceList:
    """Issued invoices by date; every line links to the aggregate behind it (`why`)."""
    stored = ctx.store.invoices(account.team)
    return InvoiceList(team=account.team,
                       invoices=[_stored_view(ctx, account, inv) for inv in stored])


@router.get("/teams/{team}/invoices/{invoice_date}", tags=["invoices"], responses={
    404: {"model": ErrorBody, "description": "Unknown team, or no such invoice"},
})
def get_invoice(
    ctx: Ctx,
    account: AccountDep,
    invoice_date: Annotated[date, Path(description="The invoice's date (YYYY-MM-DD)")],
    reference: Annotated[str, Query(max_length=MAX_REFERENCE_LENGTH,
                                    description="Empty (the default): the invoice of the "
                                                "billing date; else an immediate charge's "
                                                "or a credit note's")]
    = "",
) -> InvoiceOut:
    """One issued invoice, by its date (and reference for an immediate charge)."""
    problem = date_problem(invoice_date, "invoice date")
    if problem:
        raise HTTPException(422, problem)
    for stored in ctx.store.invoices(account.team):
        if stored.invoice_date == invoice_date and stored.reference == reference:
            return _stored_view(ctx, account, stored)
    raise HTTPException(404, f"no invoice of team {account.team!r} dated {invoice_date} "
                             f"with reference {reference!r}")


@router.get("/teams/{team}/access", tags=["lifecycle"], responses={
    **_UNKNOWN,
    409: {"model": ErrorBody, "description": "The stored billing history no longer applies"},
})
def get_access(ctx: Ctx, account: AccountDep) -> AccessOut:
    """The team's lifecycle state now and whether its people may log in: product services
    ask this before a login."""
    return _access_view(read_access(ctx.store, ctx.catalog, account.team, ctx.clock()))


@router.get("/accounts/{account}", tags=["lifecycle"], responses={
    404: {"model": ErrorBody, "description": "No team has this billing account"},
})
def get_billing_account(
    ctx: Ctx,
    account: Annotated[str, Path(description="A billing account of the catalog")],
) -> AccountOut:
    """The teams billed to one customer, each with its access and its own invoices and
    credit notes: every team is still invoiced separately."""
    members = ctx.catalog.billing_account(account)
    if not members:
        raise HTTPException(404, f"unknown billing account {account!r}: no team of the "
                                 "catalog has it")
    now = ctx.clock()
    return AccountOut(account=account, teams=[
        AccountTeamOut(
            team=member.team, link=_team_path(member.team),
            access=_access_view(read_access(ctx.store, ctx.catalog, member.team, now)),
            invoices=[_stored_view(ctx, member, stored)
                      for stored in ctx.store.invoices(member.team)],
        )
        for member in members
    ])


@router.get("/teams/{team}/changes", tags=["invoices"], responses=_UNKNOWN)
def list_changes(ctx: Ctx, account: AccountDep) -> ChangeList:
    """The team's stored billing changes, in effect order."""
    changes = [
        ChangeOut(source=c.source, id=c.change_id, time=c.time, change=body,
                  type=str(body.get("type", "")))
        for c in ctx.store.changes(account.team)
        if isinstance(body := json.loads(c.body), dict)
    ]
    return ChangeList(team=account.team, changes=changes)


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _invalid_request(_request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    if not errors:
        return _error(422, "invalid request")
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    return _error(422, f"{where}: {first.get('msg', 'invalid value')}")


async def _store_down(_request: Request, exc: Exception) -> JSONResponse:
    log.warning("store unavailable: %s", exc)
    return _error(503, "store unavailable; try again later",
                  {"Retry-After": str(DEFAULT_RETRY_AFTER_SECONDS)})


async def _close_refused(_request: Request, exc: Exception) -> JSONResponse:
    return _error(409, str(exc))


async def _internal(_request: Request, exc: Exception) -> JSONResponse:
    return _error(500, "internal error")


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or invalid bearer token"},
    422: {"model": ErrorBody, "description": "Invalid parameter"},
    503: {"model": ErrorBody, "description": "Store unreachable"},
}


def create_api(
    *,
    settings: Settings,
    store: Store,
    catalog: Catalog,
    registry: CollectorRegistry,
    clock: Clock = lambda: datetime.now(UTC),
    producer: EventSink | None = None,
) -> FastAPI:
    """The API on `store`; with `producer`, POST /v1/events too (metering/api/ingest.py)."""
    app = FastAPI(
        title="metering read API", version="1", description=__doc__,
        docs_url=None, redoc_url=None,
    )
    app.state.metering = _Context(
        store=store, catalog=catalog, clock=clock,
        tokens=tuple(token.get_secret_value().encode() for token in settings.api_tokens),
    )
    registry.register(LedgerCollector(store))
    app.include_router(router, dependencies=[Depends(_authorize)], responses=_ERRORS)
    app.include_router(rerate_router(settings), dependencies=[Depends(_authorize)],
                       responses=_ERRORS)
    app.include_router(ui_router())
    if producer is not None:
        app.include_router(ingest_router(settings, producer, IngestMetrics.create(registry)),
                           dependencies=[Depends(_authorize)], responses=_ERRORS)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StoreError, _store_down)
    app.add_exception_handler(CloseError, _close_refused)
    app.add_exception_handler(Exception, _internal)

    @app.get("/healthz", tags=["service"])
    def healthz() -> Health:
        """The process answers (the store is not asked)."""
        return Health(status="ok")

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), media_type=content_type)

    return app
