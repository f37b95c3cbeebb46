"""Version-1 event contract: CloudEvents 1.0, structured JSON (ARCHITECTURE.md section 3)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

EventType = Literal["clock_in", "clock_out", "login", "bot_command", "api_call"]
EVENT_TYPES: tuple[EventType, ...] = ("clock_in", "clock_out", "login", "bot_command", "api_call")

DEFAULT_MAX_EVENT_BYTES = 64 * 1024
DEFAULT_MAX_FUTURE_SKEW = timedelta(minutes=5)


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
    time: AwareDatetime
    subject: str = Field(min_length=1, max_length=256)
    data: ActivityData

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
