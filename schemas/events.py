"""Version-1 activity event contract: CloudEvents 1.0 in structured JSON mode.

```json
{"specversion": "1.0", "id": "evt-1", "source": "timeclock", "type": "clock_in",
 "time": "2026-07-04T08:01:00Z", "subject": "team-acme", "data": {"user_id": "u-42"}}
```
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "ActivityData",
    "ActivityEvent",
    "DEFAULT_MAX_EVENT_BYTES",
    "DEFAULT_MAX_FUTURE_SKEW",
    "EARLIEST_TIME",
    "EVENT_TYPES",
    "EventTime",
    "EventType",
    "LATEST_TIME",
    "is_future",
    "rfc3339_text",
]

EventType = Literal["clock_in", "clock_out", "login", "bot_command", "api_call"]
EVENT_TYPES: tuple[EventType, ...] = ("clock_in", "clock_out", "login", "bot_command", "api_call")

DEFAULT_MAX_EVENT_BYTES = 64 * 1024
DEFAULT_MAX_FUTURE_SKEW = timedelta(minutes=5)
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})"
)
# ClickHouse DateTime holds unsigned 32-bit seconds since the epoch
EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(2106, 2, 7, 6, 28, 15, tzinfo=UTC)


def rfc3339_text(value: object) -> object:
    """A before-validator: only RFC 3339 text with an offset may become a time."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("time must be an RFC 3339 date-time with offset")
    return value


EventTime = Annotated[AwareDatetime, Field(ge=EARLIEST_TIME, le=LATEST_TIME)]


class ActivityData(BaseModel):
    """The activity's payload: who was active, and any fields of the product's own."""

    model_config = ConfigDict(extra="allow", frozen=True)

    user_id: str = Field(min_length=1, max_length=256)
    """The active person, counted once per team and period however often they act."""


class ActivityEvent(BaseModel):
    """One activity: `subject` is the billed team, `data.user_id` the active person."""

    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: Literal["1.0"]
    """The CloudEvents version: "1.0"."""
    id: str = Field(min_length=1, max_length=256)
    """Unique within `source`: a retried or redelivered event keeps its `(source, id)` and
    counts once."""
    source: str = Field(min_length=1, max_length=256)
    """The product service that saw the activity."""
    type: EventType
    """What the person did, recorded with the activity; any type makes them active."""
    time: EventTime
    """When it happened: RFC 3339 with an offset, 1970..2106 (what the store holds); the
    decoder rejects a time more than DEFAULT_MAX_FUTURE_SKEW ahead of its clock."""
    subject: str = Field(min_length=1, max_length=256)
    """The billed team."""
    data: ActivityData
    """Who was active."""

    _rfc3339_time = field_validator("time", mode="before")(rfc3339_text)

    def extensions(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Fields beyond the contract, of the event and of its data: the only parts of a
        valid event without a size or shape bound."""
        return self.__pydantic_extra__ or {}, self.data.__pydantic_extra__ or {}

    @property
    def team(self) -> str:
        return self.subject

    @property
    def user_id(self) -> str:
        return self.data.user_id


def is_future(
    event_time: datetime, now: datetime, skew: timedelta = DEFAULT_MAX_FUTURE_SKEW
) -> bool:
    """True when the event claims to happen later than `now` plus the allowed clock skew."""
    return event_time > now + skew
