"""Response models of the read API (`metering.api.app`): what its OpenAPI document describes."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from schemas import InvoiceLine, UsageRecord

__all__ = [
    "ChangeList",
    "ChangeOut",
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


class InvoiceOut(BaseModel):
    team: str
    invoice_date: date
    reference: str = Field(description='The billing change ("source/id") of an immediate '
                                       'charge; empty for the invoice of a billing date')
    currency: str
    lines: list[LineOut]
    subtotal: str
    tax: str
    total: str
    usage: list[UsageRecord]
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


class Health(BaseModel):
    status: Literal["ok"]
