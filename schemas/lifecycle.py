"""Account lifecycle data: the dunning policy a catalog names, team states, and the notices
published on `billing-notices` (README "Account lifecycle"; seed 000 "What happens when a
payment fails", "Canceling").

A team's state is derived, never stored (invoicing/lifecycle.py). Each transition and each
scheduled retry is a notice, a CloudEvents 1.0 structured JSON message (key = team) whose id
is a function of the team, the step and its moment, so that a rerun or a restart publishes
the same notice under the same id and a consumer that keeps ids sees it once:

```json
{"specversion": "1.0", "id": "team-acme/team_suspended/2026-08-11T00:05:00Z",
 "source": "metering", "type": "team_suspended", "time": "2026-08-11T00:05:00Z",
 "subject": "team-acme", "data": {"state": "suspended", "reason": "4 failed payments of the
 invoice of 2026-08-04", "invoice": {"invoice_date": "2026-08-04", "reference": ""}}}
```
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.payments import InvoiceRef

__all__ = [
    "DEFAULT_DUNNING",
    "LOGIN_DENIED",
    "NOTICE_TYPES",
    "STATES",
    "DunningPolicy",
    "Notice",
    "NoticeData",
    "NoticeType",
    "TeamState",
]

TeamState = Literal["active", "past_due", "suspended", "paused", "archived", "cancelled",
                    "deleted"]
STATES: tuple[TeamState, ...] = ("active", "past_due", "suspended", "paused", "archived",
                                 "cancelled", "deleted")
# Seed 000: "you and your team lose login access until billing is resolved".
LOGIN_DENIED: frozenset[TeamState] = frozenset({"suspended", "paused", "archived", "deleted"})

NoticeType = Literal[
    "payment_failed_notice", "payment_retry_due", "team_suspended", "team_paused",
    "team_archived", "team_reactivated", "team_cancelled", "team_deleted",
]
NOTICE_TYPES: tuple[NoticeType, ...] = (
    "payment_failed_notice", "payment_retry_due", "team_suspended", "team_paused",
    "team_archived", "team_reactivated", "team_cancelled", "team_deleted",
)
_MAX_DAYS = 3660


class DunningPolicy(BaseModel):
    """What happens after a failed payment, and how long a paused team is kept.

    Defaults follow seed 000 ("We retry, in line with Stripe's retry schedule"; suspended
    "after several failures"; paused "after an extended grace period"; data "preserved
    for an extended period (currently 90 days)") with Stripe's default retry schedule of
    three retries within a week."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retry_days: tuple[int, ...] = (3, 5, 7)
    """Days after the first failure of an invoice on which the payment is retried."""
    suspend_after_failures: int = Field(default=4, ge=1, le=100)
    """Failed attempts of one invoice (the first charge and its retries) that suspend."""
    pause_after_days: int = Field(default=14, ge=0, le=_MAX_DAYS)
    """Days a team stays suspended before it is paused."""
    retention_days: int = Field(default=90, ge=0, le=_MAX_DAYS)
    """Days a paused team may be reactivated (a payment, a resume) before it is archived."""
    delete_grace_days: int = Field(default=7, ge=0, le=_MAX_DAYS)
    """Days after a delete_requested change before the team's usage is removed."""

    @model_validator(mode="after")
    def _increasing(self) -> DunningPolicy:
        days = self.retry_days
        if any(day < 1 or day > _MAX_DAYS for day in days):
            raise ValueError(f"retry_days: each between 1 and {_MAX_DAYS}")
        if any(later <= earlier for earlier, later in zip(days, days[1:], strict=False)):
            raise ValueError("retry_days: give increasing days after the first failure")
        return self


DEFAULT_DUNNING: Final = DunningPolicy()


class NoticeData(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    state: TeamState
    """The team's state once the step has happened."""
    reason: str
    """Why, for a person."""
    invoice: InvoiceRef | None = None
    """The invoice the step is about, when it is about one."""
    attempt: int | None = None
    """payment_retry_due: the attempt the payment adapter should make now."""


class Notice(BaseModel):
    """One lifecycle step, as published on `billing-notices`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str
    source: Literal["metering"] = "metering"
    type: NoticeType
    time: datetime
    subject: str
    data: NoticeData

    @property
    def team(self) -> str:
        return self.subject
