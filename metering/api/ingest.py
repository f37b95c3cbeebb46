"""POST /v1/events: CloudEvents over HTTP into the events topic, acknowledged after the broker.

Content types (metering/api/cloudevents.py): `application/cloudevents+json` (one event),
`application/cloudevents-batch+json` (a JSON array of events) and binary mode
(`application/json` with `ce-specversion`, `ce-id`, `ce-source`, `ce-type`, `ce-subject`,
`ce-time` headers and the data as the body); any other is 415, a body over
`METERING_INGEST_MAX_BYTES` 413 before anything is parsed. Every member is decoded by the
worker's decoder (`schemas.decode_message`) on its own bytes.

The answer is `{"accepted": n, "rejected": [{"index", "reason", "detail"}]}`: 200 when at least
one member is valid, 400 (same body) when none is. Valid members are produced as one Kafka
message per team (a CloudEvents batch array of the members' own bytes, keyed by the team,
split to stay under MAX_MESSAGE_BYTES), as metering/producer/emitter.py batches: the worker's
cost is per message, so a batch request costs about one message per team. The answer is sent
only once the broker acknowledged every message of the request.

When the broker does not acknowledge within `METERING_INGEST_TIMEOUT_SECONDS` (down, hung),
the answer is 503 with Retry-After and no event is claimed (`accepted` 0): the client retries
the whole request. Some of its messages may have reached the broker anyway (one message per
team, each acknowledged on its own: without Kafka transactions, which tansu lacks, a request
is not all-or-nothing on the topic); the retry sends the same
events with the same (source, id), which the worker drops as duplicates (its dedupe window,
then the store's keys), so a retried request changes no count.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import anyio.to_thread
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from metering.api.bodies import limited_body
from metering.api.cloudevents import (
    BATCH_TYPE,
    BINARY_TYPE,
    STRUCTURED_TYPE,
    Members,
    Mode,
    binary_event,
    content_mode,
    decode_members,
)
from metering.api.event_sink import EventSink
from metering.api.models import ErrorBody
from metering.kafka_io import BrokerError
from metering.metrics import IngestMetrics
from metering.settings import Settings

__all__ = [
    "MAX_MESSAGE_BYTES", "IngestOut", "RejectedOut", "ingest", "ingest_router", "team_records",
]

log = logging.getLogger(__name__)

# One Kafka message of a team's events stays under librdkafka's default message.max.bytes
MAX_MESSAGE_BYTES: Final = 512 * 1024
RETRY_AFTER_SECONDS: Final = 5
# Concurrent requests decoding or waiting for the broker (AnyIO's shared pool has 40)
INGEST_THREADS: Final = 16


class RejectedOut(BaseModel):
    index: int
    """The member's position in the request (0 for a single event)."""
    reason: str
    """The worker's reason: too_large, not_utf8, invalid_json, missing_field, unknown_type,
    future_time, invalid_event."""
    detail: str


class IngestOut(BaseModel):
    accepted: int
    """Members acknowledged by the broker."""
    rejected: list[RejectedOut]
    detail: str | None = None
    """Set when nothing was accepted: why."""


def team_records(members: Members, *, max_bytes: int = MAX_MESSAGE_BYTES
                 ) -> list[tuple[str, bytes]]:
    """The valid members as (team, batch array) records: one per team, more when a team's
    members pass `max_bytes`; members in request order within a team."""
    groups: dict[str, list[list[bytes]]] = {}
    sizes: dict[str, int] = {}
    for team, raw in zip(members.teams, members.raws, strict=True):
        chunks = groups.setdefault(team, [[]])
        if chunks[-1] and sizes[team] + len(raw) + 1 > max_bytes:
            chunks.append([])
            sizes[team] = 2
        chunks[-1].append(raw)
        sizes[team] = sizes.get(team, 2) + len(raw) + 1
    return [(team, b"[" + b",".join(chunk) + b"]")
            for team, chunks in groups.items() for chunk in chunks]


def _answer(members: Members) -> IngestOut:
    rejected = [RejectedOut(index=index, reason=r.reason, detail=r.detail)
                for index, r in members.rejections]
    detail = None if members.accepted else "no valid event: nothing accepted"
    return IngestOut(accepted=members.accepted, rejected=rejected, detail=detail)


def ingest(sink: EventSink, body: bytes, mode: Mode, *, content_type: str,
           headers: Mapping[str, str], now: datetime) -> tuple[int, IngestOut, dict[str, str]]:
    """The status, body and headers of one request of `mode` whose size is already checked
    (blocking: run in a thread)."""
    if mode == "binary":
        body = binary_event(headers, body, content_type)
    members = decode_members(body, mode, now=now)
    answer = _answer(members)
    if not members.accepted:
        return 400, answer, {}
    try:
        sink.send(team_records(members))
    except BrokerError as exc:
        detail = (f"broker unavailable, not every event acknowledged ({exc}); some may be on "
                  "the topic already: retry the same request, events keep their (source, id), "
                  "so a retry counts each once")
        return 503, IngestOut(accepted=0, rejected=answer.rejected, detail=detail), {
            "Retry-After": str(RETRY_AFTER_SECONDS)}
    return 200, answer, {}


def _too_large(limit: int) -> str:
    return f"body larger than {limit:,} bytes (METERING_INGEST_MAX_BYTES); send smaller batches"


_ANSWERS: dict[int | str, dict[str, Any]] = {
    400: {"model": IngestOut, "description": "No member is a valid event"},
    413: {"model": ErrorBody, "description": "A body over METERING_INGEST_MAX_BYTES"},
    415: {"model": ErrorBody, "description": "Not a CloudEvents content type"},
    503: {"model": IngestOut,
          "description": "The broker did not acknowledge every event: none is claimed, retry"},
}
_TYPES: Final[Sequence[str]] = (STRUCTURED_TYPE, BATCH_TYPE, BINARY_TYPE)
_BODY: Final[dict[str, Any]] = {
    "requestBody": {
        "required": True,
        "description": "One CloudEvent, a JSON array of them, or binary mode's data",
        "content": {media: {"schema": {}} for media in _TYPES},
    },
}


_OUTCOMES: Final = {200: "ok", 400: "invalid", 503: "unavailable"}


def _count(metrics: IngestMetrics, status: int, answer: IngestOut) -> None:
    metrics.requests.labels(outcome=_OUTCOMES[status]).inc()
    if status == 503:  # the retry will answer for its members
        log.warning("POST /v1/events: %s", answer.detail)
        return
    metrics.events.inc(answer.accepted)
    for rejected in answer.rejected:
        metrics.rejected.labels(reason=rejected.reason).inc()


def ingest_router(settings: Settings, producer: EventSink, metrics: IngestMetrics
                  ) -> APIRouter:
    """The router of POST /v1/events, producing accepted events with `producer`."""
    router = APIRouter(prefix="/v1")
    limit = settings.ingest_max_bytes
    # Requests waiting for the broker hold these threads, not the pool the read API and
    # /healthz share: a broker outage slows ingest, never the rest of serve.
    threads = anyio.CapacityLimiter(INGEST_THREADS)

    @router.post("/events", tags=["ingest"], response_model=IngestOut, responses=_ANSWERS,
                 openapi_extra=_BODY)
    async def post_events(request: Request) -> JSONResponse:
        """Take activity events as CloudEvents (structured, batch or binary mode): each
        member is validated as the worker does, the valid ones are written to the events
        topic, and the answer comes once the broker acknowledged them."""
        clock: Callable[[], datetime] = request.app.state.metering.clock
        content_type = request.headers.get("content-type", "")
        mode = content_mode(content_type, request.headers)
        if mode is None:
            metrics.requests.labels(outcome="refused").inc()
            raise HTTPException(415, f"Content-Type must be {STRUCTURED_TYPE} (one event), "
                                     f"{BATCH_TYPE} (an array) or {BINARY_TYPE} with ce-* "
                                     "headers (binary mode), in UTF-8")
        try:
            body = await limited_body(request, limit, _too_large(limit))
        except HTTPException:
            metrics.requests.labels(outcome="refused").inc()
            raise
        status, answer, headers = await anyio.to_thread.run_sync(
            lambda: ingest(producer, body, mode, content_type=content_type,
                           headers=dict(request.headers), now=clock()),
            limiter=threads)
        _count(metrics, status, answer)
        return JSONResponse(answer.model_dump(exclude_none=True), status_code=status,
                            headers=headers)

    return router
