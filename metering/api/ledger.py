"""GET /v1/teams/{team}/periods/{start}/ledger: one period's conservation ledger, the object
`metering reconcile --team T --period START --json` prints (metering/reconcile.py).

A violated identity is part of the answer (`holds` false), not an error: the route answers
200 whatever the ledger says.
"""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, Field

from aggregation import Store
from invoicing import IdentityName
from metering.reconcile import period_json, reconcile_period
from schemas import Account

__all__ = [
    "AdjustmentOut",
    "BilledOut",
    "DuplicatesOut",
    "IdentityOut",
    "LateOut",
    "LedgerOut",
    "ledger_view",
]


class DuplicatesOut(BaseModel):
    window: int = Field(description="Caught by the worker's dedupe window (not written)")
    store_key: int = Field(description="Written again under a (source, id) the store held")
    total: int


class AdjustmentOut(BaseModel):
    invoice_date: date
    reference: str
    users: int = Field(description="Users the invoice's adjustment added for the period")


class LateOut(BaseModel):
    events: int = Field(description="Events written after the period's close (end + grace)")
    adjusted_by: list[AdjustmentOut] = Field(
        description="The invoices whose adjustments booked the period's late users")


class BilledOut(BaseModel):
    invoice_date: date = Field(description="The first invoice that billed the period")
    reference: str
    users: int = Field(description="The users that invoice billed")
    adjusted: int = Field(description="Users later invoices added (adjustments)")
    adjustments: list[AdjustmentOut]
    pending: int = Field(description="Users counted since, awaiting the next adjustment")


class IdentityOut(BaseModel):
    name: IdentityName
    holds: bool | None = Field(description="null: not checked (see note)")
    left: int
    right: int
    note: str


class LedgerOut(BaseModel):
    team: str
    period_start: date
    messages: int = Field(description="Messages of the events topic with events of the period")
    received: int
    accepted: int
    rejected: int
    rejected_by_reason: dict[str, int]
    duplicates: DuplicatesOut
    written: int = Field(description="Events sent to the store (accepted - window duplicates)")
    late: LateOut
    distinct_events: int = Field(description="Distinct (source, id) the events table holds")
    stored_users: int = Field(description="Distinct users among the stored events")
    counted_users: int = Field(description="The period's counted users (its MAU)")
    billed: BilledOut | None = Field(description="null: no issued invoice billed the period")
    identities: list[IdentityOut]
    holds: bool = Field(description="Every identity checked holds")


def ledger_view(store: Store, account: Account, period_start: date) -> LedgerOut:
    """The ledger of `account`'s period starting on `period_start` (a period start: the route
    checks it), zeros where the store holds nothing of it."""
    return LedgerOut.model_validate(
        period_json(reconcile_period(store, account.team, period_start)))
