"""Response models of the read API (`metering.api.app`): what its OpenAPI document describes."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from schemas import CreditedInvoice, DocumentKind, InvoiceLine, TeamState, UsageRecord

__all__ = [
    "AccessOut",
    "AccountOut",
    "AccountTeamOut",
    "ChangeList",
    "ChangeOut",
    "CreditedOut",
    "DailyOut",
    "DayOut",
    "ErrorBody",
    "EstimateOut",
    "Health",
    "InvoiceList",
    "InvoiceOut",
    "LineOut",
    "PeriodLinks",
    "PeriodOut",
    "TeamLinks",
    "TeamList",
    "TeamOut",
    "UserOut",
    "UsersPage",
]


class ErrorBody(BaseModel):
    detail: str


class TeamLinks(BaseModel):
    current_period: str
    invoices: str
    estimate: str
    changes: str
    access: str


class TeamOut(BaseModel):
    team: str
    plan: str
    plan_kind: str
    currency: str
    timezone: str
    start_date: date
    anchor_day: int = Field(description="Day of month on which its periods start")
    links: TeamLinks


class TeamList(BaseModel):
    teams: list[TeamOut]


class PeriodLinks(BaseModel):
    users: str
    daily: str


class PeriodOut(BaseModel):
    team: str
    start: date = Field(description="First local date of the period")
    end: date = Field(description="First local date after the period")
    current: bool = Field(description="The period holds today's local date")
    mau: int = Field(description="Distinct active users counted so far")
    links: PeriodLinks


class UserOut(BaseModel):
    user_id: str
    first_time: datetime
    event_id: str
    source: str
    type: str


class UsersPage(BaseModel):
    team: str
    period_start: date
    period_end: date
    users: list[UserOut]
    next: str | None = Field(description="The following page, or null on the last one")


class DayOut(BaseModel):
    day: date
    type: str
    events: int
    users: int


class DailyOut(BaseModel):
    team: str
    period_start: date
    period_end: date
    days: list[DayOut]


class LineOut(InvoiceLine):
    why: str = Field(description="The aggregate behind this charge")


class CreditedOut(CreditedInvoice):
    link: str = Field(description="The credited invoice on this server")


class InvoiceOut(BaseModel):
    team: str
    invoice_date: date
    reference: str = Field(description='The billing change ("source/id") of an immediate '
                                       'charge; empty for the invoice of a billing date')
    document: DocumentKind = Field(
        default="invoice", description="invoice, or credit_note: a document of its own that "
                                       "credits an issued invoice (which never changes)")
    number: str | None = Field(default=None, description="A credit note's number")
    credits: CreditedOut | None = Field(default=None,
                                        description="The invoice a credit note credits")
    currency: str
    lines: list[LineOut]
    subtotal: str
    tax: str
    total: str
    usage: list[UsageRecord]
    payment_terms: str | None = Field(
        default=None, description='Invoiced billing ("NET 30"); null when charged at once')
    due_date: date | None = Field(default=None,
                                  description="When payment is due under the payment terms")
    link: str


class InvoiceList(BaseModel):
    team: str
    invoices: list[InvoiceOut]


class EstimateOut(BaseModel):
    team: str
    as_of: datetime
    invoice: InvoiceOut | None = Field(
        description="The next billing date's invoice if the open period ended now; null when "
                    "nothing more will be billed")


class ChangeOut(BaseModel):
    source: str
    id: str
    type: str
    time: datetime
    change: dict[str, Any] = Field(description="The change's CloudEvent as stored")


class ChangeList(BaseModel):
    team: str
    changes: list[ChangeOut]


class AccessOut(BaseModel):
    """What a product service asks before a login: suspended, paused, archived and deleted
    teams may not log in."""

    team: str
    state: TeamState = Field(description="The lifecycle state derived from the team's "
                                         "invoices, payments, changes and the time")
    since: datetime | None = Field(description="When the team entered the state (UTC); null "
                                               "when active since its start")
    why: str = Field(description="Why the team is in the state, for a person")
    login_allowed: bool = Field(description="False when suspended, paused, archived or "
                                            "deleted")
    billing_paused_until: date | None = Field(
        description="After a subscription takeover: benefits active, billing paused until "
                    "this date; null otherwise")


class AccountTeamOut(BaseModel):
    team: str
    access: AccessOut
    invoices: list[InvoiceOut] = Field(description="The team's own invoices and credit "
                                                   "notes, as /v1/teams/{team}/invoices")
    link: str = Field(description="The team on this server")


class AccountOut(BaseModel):
    account: str = Field(description="The billing account (the catalog's billing_account)")
    teams: list[AccountTeamOut] = Field(description="Its teams in catalog order, each "
                                                    "invoiced separately")


class Health(BaseModel):
    status: Literal["ok"]
