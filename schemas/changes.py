"""Billing changes on `billing-changes`: CloudEvents 1.0 structured JSON, key = team.

```json
{"specversion": "1.0", "id": "chg-7", "source": "crm", "type": "add_units",
 "time": "2019-01-18T10:00:00Z", "subject": "team-daniel", "data": {"count": 20}}
```

`time` is when the change takes effect; `subject` is the team; `(source, id)` identifies it,
so a redelivery changes nothing. Types, by plan kind:

- licence and seat plans: add_units (count bought now, charged prorated at once),
  reduce_units (licences: count the renewal bills); seat plans also member_added and
  member_archived (count members, default 1; seats must hold every member).
- tier plans: change_plan (plan, by), cancel, resume, leave (by), add_addon and remove_addon
  (addon, count default 1); change_plan may carry `usage` for a lower tier's limits;
  take_over (plan, by): a member who is not the owner starts a new subscription (seed 003).
- every plan: refund_requested (invoice; `amount`, or `remaining_months` of an annual
  prepaid term, or neither for the whole invoice) issues a credit note; delete_requested
  (by) removes the team's usage after the policy's grace; plan_changed (plan; count for a
  licence or seat plan) moves a team between a MAU plan and a seat or licence plan on a
  billing date.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.events import rfc3339_text
from schemas.limits import stored_time
from schemas.payments import InvoiceRef, money_text

__all__ = ["CHANGE_TYPES", "LIFECYCLE_TYPES", "BillingChange", "ChangeData", "ChangeType"]

ChangeType = Literal[
    "change_plan", "cancel", "resume", "leave", "add_addon", "remove_addon",
    "add_units", "reduce_units", "member_added", "member_archived",
    "take_over", "refund_requested", "delete_requested", "plan_changed",
]
CHANGE_TYPES: tuple[ChangeType, ...] = (
    "change_plan", "cancel", "resume", "leave", "add_addon", "remove_addon",
    "add_units", "reduce_units", "member_added", "member_archived",
    "take_over", "refund_requested", "delete_requested", "plan_changed",
)
# Changes any plan kind takes, which the account's billing schedule does not replay.
LIFECYCLE_TYPES: frozenset[ChangeType] = frozenset({"refund_requested", "delete_requested"})
_NEEDS_BY = frozenset({"change_plan", "cancel", "resume", "leave", "add_addon", "remove_addon",
                       "take_over", "delete_requested"})
_NEEDS_PLAN = frozenset({"change_plan", "take_over", "plan_changed"})


class ChangeData(BaseModel):
    """What the change needs besides its type; which fields a type takes is checked by
    BillingChange."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    by: str | None = Field(default=None, min_length=1, max_length=256)
    """Who made the change; every tier-plan change names one."""
    plan: str | None = Field(default=None, min_length=1, max_length=256)
    """change_plan, take_over and plan_changed only: the catalog plan the team moves to."""
    addon: str | None = Field(default=None, min_length=1, max_length=256)
    """add_addon and remove_addon only: the catalog add-on."""
    count: int | None = Field(default=None, ge=0, le=1_000_000)
    """Units: licences or seats bought (add_units) or renewed (reduce_units, may be 0),
    members added or archived (default 1), add-ons added or removed (default 1)."""
    usage: dict[str, int] = Field(default_factory=dict, max_length=64)
    """change_plan only: the team's use of each limited resource (name -> amount), which a
    lower tier must hold."""
    invoice: InvoiceRef | None = None
    """refund_requested only: the invoice credited (its date and reference)."""
    amount: str | None = Field(default=None, min_length=1, max_length=32)
    """refund_requested only: a partial refund, in the invoice's currency ("12.50")."""
    remaining_months: bool = False
    """refund_requested only: refund the whole months left of an annual prepaid term."""

    @field_validator("amount")
    @classmethod
    def _money(cls, value: str | None) -> str | None:
        return None if value is None else money_text(value, positive=True)


class BillingChange(BaseModel):
    """One change to a team's billing, as the CRM sends it; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    specversion: Literal["1.0"]
    """The CloudEvents version: "1.0"."""
    id: str = Field(min_length=1, max_length=256)
    """Unique within `source`: a resent change keeps its `(source, id)` and changes nothing."""
    source: str = Field(min_length=1, max_length=256)
    """The system that made the change, such as the CRM."""
    type: ChangeType
    """What changes; the types a team takes depend on its plan's kind."""
    time: AwareDatetime
    """When the change takes effect: RFC 3339 with an offset, on a date the store holds
    (1971-01-01..2104-12-31 in UTC)."""
    subject: str = Field(min_length=1, max_length=256)
    """The team, which is also the message key."""
    data: ChangeData = ChangeData()
    """What the type needs; may be left out when it needs nothing."""

    _rfc3339_time = field_validator("time", mode="before")(rfc3339_text)

    _stored_time = field_validator("time")(partial(stored_time, what="effective date"))

    @model_validator(mode="after")
    def _fields_of_type(self) -> BillingChange:
        data, kind = self.data, self.type
        if kind in _NEEDS_BY and data.by is None:
            raise ValueError(f"data.by: {kind} needs who made it")
        if (kind in _NEEDS_PLAN) != (data.plan is not None):
            raise ValueError(f"data.plan: {'needed' if kind in _NEEDS_PLAN else 'not used'} "
                             f"by {kind}")
        refund = kind == "refund_requested"
        if refund != (data.invoice is not None):
            raise ValueError(f"data.invoice: {'needed' if refund else 'not used'} by {kind}")
        if not refund and (data.amount is not None or data.remaining_months):
            raise ValueError(f"data.amount, data.remaining_months: not used by {kind}")
        if data.amount is not None and data.remaining_months:
            raise ValueError("data.amount: give an amount or remaining_months, not both")
        if kind.endswith("_addon") != (data.addon is not None):
            raise ValueError(f"data.addon: {'needed' if kind.endswith('_addon') else 'not used'}"
                             f" by {kind}")
        if kind in ("add_units", "reduce_units") and data.count is None:
            raise ValueError(f"data.count: {kind} needs a count")
        if kind != "reduce_units" and data.count == 0:
            raise ValueError(f"data.count: {kind} needs a count of at least 1")
        if data.usage and kind != "change_plan":
            raise ValueError(f"data.usage: only change_plan carries usage, not {kind}")
        return self

    @property
    def team(self) -> str:
        return self.subject

    @property
    def reference(self) -> str:
        """How invoices and the store name the change: "source/id"."""
        return f"{self.source}/{self.id}"
