"""POST /v1/rerate: the pricing what-if of `metering rerate --json` for dashboards.

The body is the candidate catalog as YAML text (Content-Type application/yaml or text/plain,
UTF-8, at most MAX_CANDIDATE_BYTES: 413 beyond); the query gives `from`, `to` and optionally
`team`. The answer is the JSON object `metering rerate --json` prints. A candidate that does
not parse or a range out of bounds is 422 with a one-line detail, a team the candidate lacks
404; one what-if runs at a time (429 while one does). Nothing is stored or published.

`rerate_router(settings)` imports nothing of metering/api/app.py: it reads the store and the
clock from `request.app.state.metering`, as the app's own handlers do, and is included by
`create_api` behind the same bearer-token dependency.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import date, datetime
from typing import Annotated, Any, Final, Protocol

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from aggregation import Store
from invoicing import MAX_RERATE_DAYS, RerateError, UnknownTeam, range_problem, rerate_json
from metering.api.bodies import limited_body
from metering.api.models import ErrorBody
from metering.rerate import run_rerate
from metering.settings import Settings
from schemas import TEAM_ID_MAX_CHARS, CatalogError, parse_catalog

__all__ = ["CANDIDATE_TYPES", "MAX_CANDIDATE_BYTES", "RerateOut", "rerate_router"]

# The largest candidate catalog taken, in bytes: thousands of accounts with every field. A
# larger what-if runs from the command line, which takes a catalog of any allowed size.
MAX_CANDIDATE_BYTES: Final = 4 * 2**20
CANDIDATE_TYPES: Final = frozenset({"application/yaml", "text/plain"})
RETRY_AFTER_SECONDS: Final = 5


class TeamRerateOut(BaseModel):
    team: str
    currency: str
    issued: str
    candidate: str
    difference: str  # candidate - issued
    issued_invoices: int
    candidate_invoices: int


class TotalRerateOut(BaseModel):
    currency: str
    issued: str
    candidate: str
    difference: str


class SkippedOut(BaseModel):
    team: str
    reason: str


class RerateOut(BaseModel):
    """What `metering rerate --json` prints."""

    model_config = ConfigDict(populate_by_name=True)

    first_day: date = Field(alias="from")
    last_day: date = Field(alias="to")
    as_of: datetime
    teams: list[TeamRerateOut]
    totals: list[TotalRerateOut]
    skipped: list[SkippedOut]


class _State(Protocol):
    """What the handler reads of the app's context (metering/api/app.py `_Context`)."""

    @property
    def store(self) -> Store: ...

    @property
    def clock(self) -> Callable[[], datetime]: ...


_ANSWERS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "The candidate catalog has no such team"},
    413: {"model": ErrorBody, "description": f"A body over {MAX_CANDIDATE_BYTES} bytes"},
    415: {"model": ErrorBody, "description": "A body not application/yaml or text/plain"},
    422: {"model": ErrorBody,
          "description": "A candidate that does not parse, or a range out of bounds"},
    429: {"model": ErrorBody, "description": "A what-if is running; try again later"},
}
_BODY: Final[dict[str, Any]] = {
    "requestBody": {
        "required": True,
        "description": "The candidate catalog: plans and accounts, in the catalog file's "
                       "format (UTF-8 YAML)",
        "content": {media: {"schema": {"type": "string"}} for media in sorted(CANDIDATE_TYPES)},
    },
}


def _too_large() -> str:
    return (f"candidate catalog larger than {MAX_CANDIDATE_BYTES:,} bytes; run "
            "`metering rerate` for a larger one")


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


def rerate_router(settings: Settings) -> APIRouter:
    """The router of POST /v1/rerate, rating with `settings`' grace and batch size."""
    router = APIRouter(prefix="/v1")
    running = threading.Lock()

    def answer(state: _State, text: str, first_day: date, last_day: date,
               team: str | None) -> dict[str, Any]:
        try:
            candidate = parse_catalog(text, origin="candidate catalog")
        except CatalogError as exc:
            raise HTTPException(422, str(exc)) from exc
        try:
            result = run_rerate(settings, candidate=candidate, first_day=first_day,
                                last_day=last_day, team=team, now=state.clock(),
                                store=state.store)
        except UnknownTeam as exc:
            raise HTTPException(404, str(exc)) from exc
        except RerateError as exc:
            raise HTTPException(422, str(exc)) from exc
        return rerate_json(result)

    @router.post("/rerate", tags=["invoices"], response_model=RerateOut, responses=_ANSWERS,
                 openapi_extra=_BODY)
    async def post_rerate(
        request: Request,
        first_day: Annotated[date, Query(alias="from",
                                         description="The first billing date re-rated")],
        last_day: Annotated[date, Query(
            alias="to", description=f"The last billing date re-rated, at most "
                                    f"{MAX_RERATE_DAYS} days after `from` counting both")],
        team: Annotated[str | None, Query(max_length=TEAM_ID_MAX_CHARS,
                                          description="Only this team of the candidate")]
        = None,
    ) -> JSONResponse:
        """The invoices dated `from`..`to` as issued and as the candidate catalog in the body
        would issue them, per team and currency, with the totals per currency and the teams
        the candidate cannot rate (as `metering rerate --json`). Nothing is stored or
        published."""
        if _media_type(request) not in CANDIDATE_TYPES:
            raise HTTPException(415, "the body must be the candidate catalog as "
                                     "application/yaml or text/plain")
        problem = range_problem(first_day, last_day)
        if problem:
            raise HTTPException(422, problem)
        data = await limited_body(request, MAX_CANDIDATE_BYTES, _too_large())
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HTTPException(422, f"candidate catalog: not UTF-8 text (byte {exc.start})"
                                ) from exc
        if "\r" in text:  # line ends as a catalog file read as text has them
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if not running.acquire(blocking=False):
            raise HTTPException(429, "a what-if is running; try again later",
                                headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        try:
            state: _State = request.app.state.metering
            body = await run_in_threadpool(answer, state, text, first_day, last_day, team)
        finally:
            running.release()
        return JSONResponse(body)

    return router
