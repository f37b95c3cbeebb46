"""Version-1 event contract: CloudEvents 1.0, structured JSON (ARCHITECTURE.md section 3)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

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
    model_config = ConfigDict(extra="allow", frozen=True)

    user_id: str = Field(min_length=1, max_length=256)


class ActivityEvent(BaseModel):
    """One activity: `subject` is the billed team, `data.user_id` the active person."""

    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: Literal["1.0"]
    id: str = Field(min_length=1, max_length=256)
    source: str = Field(min_length=1, max_length=256)
    type: EventType
    time: EventTime
    subject: str = Field(min_length=1, max_length=256)
    data: ActivityData

    _rfc3339_time = field_validator("time", mode="before")(rfc3339_text)

    def has_extensions(self) -> bool:
        """Fields beyond the contract: the only parts of a valid event without a size bound."""
        return bool(self.__pydantic_extra__) or bool(self.data.__pydantic_extra__)

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
