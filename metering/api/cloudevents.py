"""CloudEvents over HTTP as the worker reads them: a request's members, each decoded alone.

Pure functions of `POST /v1/events` (metering/api/ingest.py):

- `content_mode`: the request's Content-Type as "structured" (`application/cloudevents+json`,
  one event), "batch" (`application/cloudevents-batch+json`, a JSON array) or "binary"
  (`application/json` with the attributes in `ce-*` headers), or None (415);
- `binary_event`: the structured event rebuilt from binary mode's headers and body, as bytes
  (`schemas.structured_event`, as the worker rebuilds Kafka's binary mode);
- `decode_members`: the body's members, each decoded as a message of its own bytes (the
  bytes the worker will measure and read) by the worker's decoder, with its index in the
  request.

A structured body that is an array, or a batch body that is not one, is one member rejected
as `invalid_event`; a batch that cannot be taken apart is one `invalid_json` member (index 0),
as the worker rejects such a message whole.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Literal
from urllib.parse import unquote

from schemas import Rejection, decode_batch, split_array, structured_event

__all__ = [
    "BATCH_TYPE",
    "BINARY_TYPE",
    "STRUCTURED_TYPE",
    "Members",
    "Mode",
    "binary_event",
    "content_mode",
    "decode_members",
]

STRUCTURED_TYPE: Final = "application/cloudevents+json"
BATCH_TYPE: Final = "application/cloudevents-batch+json"
BINARY_TYPE: Final = "application/json"
Mode = Literal["structured", "batch", "binary"]
_MODES: Final[dict[str, Mode]] = {
    STRUCTURED_TYPE: "structured", BATCH_TYPE: "batch", BINARY_TYPE: "binary",
}
_ARRAY_START = re.compile(rb"[ \t\r\n]*\[")
_CHARSET = re.compile(r"charset\s*=\s*\"?([^\";\s]+)", re.IGNORECASE)
_PREFIX: Final = "ce-"


def content_mode(content_type: str, headers: Mapping[str, str]) -> Mode | None:
    """The mode of a request with this Content-Type and these headers; None for another media
    type, a charset other than UTF-8, or `application/json` without a `ce-specversion`
    header (binary mode names its attributes in headers; a structured event posted as
    `application/json` is a client's mistake, answered 415). Binary mode without a
    Content-Type (the SDK sends none for data without a `datacontenttype`) is JSON data."""
    binary = any(name.lower() == f"{_PREFIX}specversion" for name in headers)
    if not content_type.strip():
        return "binary" if binary else None
    media, _, params = content_type.partition(";")
    charset = _CHARSET.search(params)
    if charset is not None and charset.group(1).lower() not in ("utf-8", "utf8"):
        return None
    mode = _MODES.get(media.strip().lower())
    return None if mode == "binary" and not binary else mode


def binary_event(headers: Mapping[str, str], body: bytes, content_type: str) -> bytes:
    """The structured event of a binary-mode request: each `ce-<name>` header becomes the
    attribute `<name>` (percent-decoded, as the HTTP binding encodes values), the
    Content-Type `datacontenttype` and the body `data`."""
    attributes: dict[str, str] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered.startswith(_PREFIX) and len(lowered) > len(_PREFIX):
            attributes[lowered[len(_PREFIX):]] = unquote(value)
    return structured_event(attributes, body, content_type)


@dataclass
class Members:
    """The outcome of every member of one request, in request order."""

    teams: list[str] = field(default_factory=list)
    """Each valid event's team."""
    raws: list[bytes] = field(default_factory=list)
    """Each valid event's own bytes, as produced to the events topic."""
    rejections: list[tuple[int, Rejection]] = field(default_factory=list)
    """(index in the request, why) of every member not taken."""
    user_ids: list[str] = field(default_factory=list)
    """Each valid event's user (normal form), for tests and logs."""
    event_ids: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return len(self.raws)

    @property
    def total(self) -> int:
        return self.accepted + len(self.rejections)


def _not_an_object(raw: bytes) -> Rejection:
    return Rejection("invalid_event", "an event must be a JSON object", raw)


def _split(body: bytes, mode: Mode) -> list[bytes] | Rejection:
    is_array = _ARRAY_START.match(body) is not None
    if mode != "batch":
        return _not_an_object(body) if is_array else [body]
    if not is_array:
        return Rejection("invalid_event", f"a {BATCH_TYPE} body must be a JSON array", body)
    members = split_array(body)
    if isinstance(members, str):
        return Rejection("invalid_json", members, body)
    return members


def decode_members(body: bytes, mode: Mode, *, now: datetime) -> Members:
    """Every member of the body (already rebuilt for binary mode) decoded as the worker
    decodes a message holding it alone: the members go through `schemas.decode_batch` as
    one message each (its columnar fast path, `decode_message` for any it cannot take)."""
    outcome = Members()
    members = _split(body, mode)
    if isinstance(members, Rejection):
        outcome.rejections.append((0, members))
        return outcome
    objects: list[int] = []  # the request index of each member given to the decoder
    for index, member in enumerate(members):
        if _ARRAY_START.match(member) is not None:  # the decoder would read it as a batch
            outcome.rejections.append((index, _not_an_object(member)))
        else:
            objects.append(index)
    decoded = decode_batch([members[index] for index in objects], now=now)
    for position, rejections in decoded.rejections.items():
        outcome.rejections.append((objects[position], rejections[0]))
    outcome.rejections.sort(key=lambda pair: pair[0])
    events = decoded.events
    outcome.raws = [members[objects[position]] for position in events.message.tolist()]
    outcome.teams, outcome.user_ids, outcome.event_ids = (
        events.team, events.user_id, events.event_id)
    return outcome
