"""Plan kinds, subscription changes and tax data that a catalog can embed.

Seeds: 001 (MAU plan), 004 (MAU minimum, annual licences), 002 (per-seat plans), 000 (tiers
with limits and add-ons, tax by billing address), 003 (subscription changes). Models are
frozen, refuse unknown fields, keep money as Decimal >= 0 and name the field in a one-line
error. A plan's `kind` is fixed per class so the catalog can hold them in one discriminated
union; `rated_from_usage` says whether the close rates it from the store's active users on
each billing date (MAU kinds) or bills it from the schedule of its billing changes.

Bounds, so that whatever the catalog holds can be rated: every price, fee and rate is at
most MAX_PRICE with at most MAX_PRICE_PLACES decimal places, trailing zeros aside (as
Stripe's `unit_amount_decimal`), every count (users included, minimum users, units, members, limits,
capacities) at most MAX_QUANTITY, and every date inside the store's FIRST_DATE..LAST_DATE.
The largest product the rating forms is a term's price (12 x MAX_PRICE: 14 digits and 12
places) times a count of active users as large as the store can report (2^64 - 1: 20
digits), 46 significant digits; an invoice's sum of such lines and its tax stay inside the
60 digits invoicing/money.py computes exactly (tests/unit/test_money_bounds.py rates
catalogs at these bounds).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, ClassVar, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from schemas.currency import CURRENCY_EXPONENTS
from schemas.limits import date_problem

__all__ = [
    "AddOn",
    "AfterCancel",
    "Billing",
    "BillingAddress",
    "LicencePlan",
    "MAX_PRICE",
    "MAX_PRICE_PLACES",
    "MAX_QUANTITY",
    "MauMinimumPlan",
    "MauPlan",
    "PlanChanges",
    "PrepaidPlan",
    "Proration",
    "SeatOrder",
    "SeatPlan",
    "SubscriptionChange",
    "SubscriptionHistory",
    "TIER_ACTIONS",
    "TaxTable",
    "TierAction",
    "TierPlan",
    "seat_shortage",
]

# How a part of a prepaid term is priced (invoicing/terms.py has the arithmetic):
# exact_days      days used / days in the term (the documented default);
# months_2dp      Jibble seed 004: days turned into months of the term, rounded to 2 places;
# calendar_months Jibble seed 002: whole anchor months, a partial month by its own days.
Proration = Literal["exact_days", "months_2dp", "calendar_months"]
Billing = Literal["monthly", "annual"]
# How a tier plan bills a change of plan mid-term (invoicing/plans/subscription.py):
# prorate_next_invoice   seed 003: the next invoice adds the new plan's partial term and
#                        credits the old plan's unused time; anyone may downgrade.
# charge_difference_now  seed 000: an upgrade charges the prorated difference at once; a
#                        downgrade is refused while usage exceeds the lower tier, and its
#                        unused difference is credited on the next invoice.
PlanChanges = Literal["prorate_next_invoice", "charge_difference_now"]
TierAction = Literal["change_plan", "cancel", "resume", "leave", "add_addon", "remove_addon",
                    "take_over"]
TIER_ACTIONS: frozenset[str] = frozenset(
    {"change_plan", "cancel", "resume", "leave", "add_addon", "remove_addon", "take_over"}
)
# What a cancelled tier subscription becomes at the end of its paid term: seed 000 pauses
# the instance (resumable within the dunning policy's retention, then archived); seed 003
# moves the organization to the free plan.
AfterCancel = Literal["pause", "free"]


def _known_currency(value: str) -> str:
    if value not in CURRENCY_EXPONENTS:
        raise ValueError(f"unknown currency {value!r} (no ISO 4217 exponent)")
    return value


def _store_date(day: date) -> date:
    problem = date_problem(day, "date")
    if problem:
        raise ValueError(problem)
    return day


MAX_PRICE: Final = Decimal(10) ** 12
MAX_PRICE_PLACES: Final = 12
MAX_QUANTITY: Final = 10**12

Money = Annotated[Decimal, Field(ge=0, le=MAX_PRICE, decimal_places=MAX_PRICE_PLACES,
                                 allow_inf_nan=False)]
Rate = Annotated[Decimal, Field(ge=0, lt=1, decimal_places=MAX_PRICE_PLACES,
                                allow_inf_nan=False)]
Currency = Annotated[str, AfterValidator(_known_currency)]
Name = Annotated[str, Field(min_length=1)]
Count = Annotated[int, Field(ge=0, le=MAX_QUANTITY)]
# A date the store holds (schemas/limits.py), one-line refusal otherwise.
StoreDate = Annotated[date, AfterValidator(_store_date)]
Code = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]  # ISO 3166 country, US state


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Plan(_Frozen):
    """What every plan kind may name besides its prices."""

    dunning: Name | None = None
    """The catalog's dunning policy for teams on this plan (an account may name its own)."""


class MauPlan(_Plan):
    """Seed 001 Power Plan shape: base fee in advance including N MAUs, overage in arrears."""

    rated_from_usage: ClassVar[bool] = True

    kind: Literal["mau"] = "mau"
    name: Name
    currency: Currency
    base_fee: Money
    included_users: Count
    overage_price: Money


class MauMinimumPlan(_Plan):
    """Seed 004 monthly plan: `minimum_users` charged at the period's start, the rest after."""

    rated_from_usage: ClassVar[bool] = True

    kind: Literal["mau_minimum"] = "mau_minimum"
    name: Name
    currency: Currency
    unit_price: Money  # per active user per month
    minimum_users: Count


class PrepaidPlan(_Plan):
    """Units (licences, seats) bought up front for a term of 1 or 12 months."""

    rated_from_usage: ClassVar[bool] = False
    unit: ClassVar[str] = "unit"

    name: Name
    currency: Currency
    monthly_price: Money  # per unit per month; a term costs monthly_price x term months
    billing: Billing
    proration: Proration = "exact_days"

    @property
    def term_months(self) -> int:
        return 12 if self.billing == "annual" else 1


class LicencePlan(PrepaidPlan):
    """Seed 004 annual licences: renewal bills the count held, less requested reductions."""

    unit: ClassVar[str] = "licence"

    kind: Literal["licence"] = "licence"
    billing: Billing = "annual"


class SeatPlan(PrepaidPlan):
    """Seed 002 per-seat plans: seats >= members; renewal resets seats to the member count."""

    unit: ClassVar[str] = "seat"

    kind: Literal["seat"] = "seat"


def seat_shortage(*, seats: int, members: int) -> str | None:
    """Why `seats` cannot hold `members` (owner included, archived members excluded)."""
    if seats >= members:
        return None
    return f"{seats} seats is below the {members} current members (owner included)"


class SeatOrder(_Frozen):
    """A seat checkout (seed 002): seats chosen, and the members they must hold."""

    seats: Count
    members: Count

    @model_validator(mode="after")
    def _enough_seats(self) -> SeatOrder:
        shortage = seat_shortage(seats=self.seats, members=self.members)
        if shortage:
            raise ValueError(f"seats: {shortage}")
        return self


class AddOn(_Frozen):
    """Seed 000 add-on: month-to-month, prorated; each unit may raise some plan limits."""

    monthly_price: Money
    capacity: dict[str, Count] = Field(default_factory=dict)


class TierPlan(_Plan):
    """Seed 000 tier (also the plans of seed 003): a monthly price, limits and add-ons.

    Limits are named freely ("users", "storage_gb", "channels"); a resource without a limit is
    unlimited. Annual billing costs 12 months less `annual_discount` (0.15 = 15 %).
    """

    rated_from_usage: ClassVar[bool] = False

    kind: Literal["tier"] = "tier"
    name: Name
    currency: Currency
    monthly_price: Money
    annual_discount: Rate = Decimal(0)
    limits: dict[str, Count] = Field(default_factory=dict)
    addons: dict[str, AddOn] = Field(default_factory=dict)
    proration: Proration = "exact_days"
    plan_changes: PlanChanges = "prorate_next_invoice"
    after_cancel: AfterCancel = "free"

    @model_validator(mode="after")
    def _addons_raise_known_limits(self) -> TierPlan:
        for name, addon in self.addons.items():
            for resource in addon.capacity:
                if resource not in self.limits:
                    raise ValueError(
                        f"addons.{name}.capacity.{resource}: not a limit of plan {self.name!r}"
                    )
        return self


class SubscriptionChange(_Frozen):
    """Seed 003: a change to a subscription by a member, effective on `at`.

    change_plan names the new plan; a more expensive one is an upgrade (owner only). leave is
    a member leaving the organization; only the owner's leaving affects the subscription.
    add_addon / remove_addon (seed 000) name the add-on and its units. `usage` is what the
    organization uses now ("users": 10), checked against a lower tier's limits.
    """

    at: StoreDate
    by: Name
    action: TierAction
    plan: Name | None = None
    addon: Name | None = None
    units: int = Field(default=1, ge=1, le=MAX_QUANTITY)
    usage: dict[str, Count] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _plan_iff_change(self) -> SubscriptionChange:
        if self.action == "change_plan" and self.plan is None:
            raise ValueError("plan: change_plan needs the new plan's name")
        if self.action != "change_plan" and self.plan is not None:
            raise ValueError(f"plan: only change_plan names a plan, not {self.action}")
        if self.action.endswith("_addon") and self.addon is None:
            raise ValueError(f"addon: {self.action} needs the add-on's name")
        if not self.action.endswith("_addon") and self.addon is not None:
            raise ValueError(f"addon: only add_addon and remove_addon name one, not {self.action}")
        return self


class SubscriptionHistory(_Frozen):
    """Changes in effect order. Proration is by whole days, so two changes may not share a
    day: their order inside it would be unknowable."""

    changes: tuple[SubscriptionChange, ...] = ()

    @model_validator(mode="after")
    def _no_overlap(self) -> SubscriptionHistory:
        for index in range(1, len(self.changes)):
            before, after = self.changes[index - 1].at, self.changes[index].at
            if after <= before:
                raise ValueError(
                    f"changes.{index}.at: {after} overlaps changes.{index - 1} at {before}; "
                    "give one change per day in date order"
                )
        return self


class TaxTable(_Frozen):
    """Tax rates as data: EU VAT by country, US sales tax by state (only where collected).

    A customer in the seller's own country pays VAT even with a VAT number.
    """

    eu_vat: dict[Code, Rate] = Field(default_factory=dict)
    us_sales_tax: dict[Code, Rate] = Field(default_factory=dict)
    seller_country: Code | None = None


class BillingAddress(_Frozen):
    """Where tax is decided. `vat_id_valid` is the caller's verification (e.g. VIES)."""

    country: Code
    region: Code | None = None  # US state, for sales tax
    vat_id: str | None = None
    vat_id_valid: bool = False

    @model_validator(mode="after")
    def _valid_needs_id(self) -> BillingAddress:
        if self.vat_id_valid and not self.vat_id:
            raise ValueError("vat_id: vat_id_valid is true but no VAT number is given")
        return self
