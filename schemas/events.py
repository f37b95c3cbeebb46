"""Version-1 activity event contract: CloudEvents 1.0 in structured JSON mode.

```json
{"specversion": "1.0", "id": "evt-1", "source": "timeclock", "type": "clock_in",
 "time": "2026-07-04T08:01:00Z", "subject": "team-acme", "data": {"user_id": "u-42"}}
```
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from schemas.limits import (
    DEFAULT_MAX_EVENT_BYTES,
    EARLIEST_TIME,
    LATEST_TIME,
    normal_user_id,
    team_id_problem,
    user_id_problem,
)

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

DEFAULT_MAX_FUTURE_SKEW = timedelta(minutes=5)
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})"
)


def rfc3339_text(value: object) -> object:
    """A before-validator: only RFC 3339 text with an offset may become a time."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("time must be an RFC 3339 date-time with offset")
    return value


EventTime = Annotated[AwareDatetime, Field(ge=EARLIEST_TIME, le=LATEST_TIME)]


class ActivityData(BaseModel):
    """The activity's payload: who was active, and any fields of the product's own."""

    model_config = ConfigDict(extra="allow", frozen=True)

    user_id: str
    """The active person, counted once per team and period however often they act: in
    Unicode normal form C, 1..USER_ID_MAX_CHARS characters, without control characters or
    whitespace at the ends (`schemas.limits`)."""

    @field_validator("user_id", mode="after")
    @classmethod
    def _user_id_shape(cls, value: str) -> str:
        value = normal_user_id(value)
        problem = user_id_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value


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
    subject: str
    """The billed team: a team id (`schemas.limits`: ASCII letters, digits, ".", "_", "-")."""
    data: ActivityData
    """Who was active."""

    _rfc3339_time = field_validator("time", mode="before")(rfc3339_text)

    @field_validator("subject", mode="after")
    @classmethod
    def _team_id_shape(cls, value: str) -> str:
        problem = team_id_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

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
