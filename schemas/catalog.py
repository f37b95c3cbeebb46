"""Plans-and-accounts catalog: the YAML file named by METERING_CATALOG (format in README)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas.periods import BillingCalendar
from schemas.plans import (
    Billing,
    BillingAddress,
    LicencePlan,
    MauMinimumPlan,
    MauPlan,
    SeatPlan,
    TaxTable,
    TierPlan,
    seat_shortage,
)

__all__ = [
    "Account",
    "Catalog",
    "CatalogError",
    "Plan",
    "load_catalog",
    "parse_catalog",
]


class CatalogError(ValueError):
    """A catalog that cannot be used; the message is one line naming what is wrong."""


class Account(BaseModel):
    """A billed team; the day of month of `start_date` is its billing anchor.

    Licence and seat plans: `units` bought on the start date; seat plans also the `members`
    (owner included) the seats must hold. Tier plans: the subscription `owner`, `billing`
    monthly or annual, and `billing_day` when billing is not on the start date's day (the
    first month is then prorated up to the first billing day).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    team: str = Field(min_length=1)
    plan: str
    start_date: date
    timezone: str = "UTC"
    billing_address: BillingAddress | None = None  # taxed by the catalog's `tax` table
    units: int | None = Field(default=None, ge=0)
    members: int | None = Field(default=None, ge=1)
    owner: str | None = Field(default=None, min_length=1)
    billing: Billing | None = None
    billing_day: int | None = Field(default=None, ge=1, le=31)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @property
    def anchor_day(self) -> int:
        return self.billing_day or self.start_date.day

    @property
    def calendar(self) -> BillingCalendar:
        """The account's billing calendar: anchor day and time zone."""
        return BillingCalendar(self.anchor_day, ZoneInfo(self.timezone))


# A plan's `kind` picks its model; a plan without one is the seed 001 MAU plan.
Plan = Annotated[
    MauPlan | MauMinimumPlan | LicencePlan | SeatPlan | TierPlan, Field(discriminator="kind")
]
PLAN_KINDS = frozenset({"mau", "mau_minimum", "licence", "seat", "tier"})
# Account fields each plan kind needs (required) and may take (allowed).
_ACCOUNT_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "mau": (frozenset(), frozenset()),
    "mau_minimum": (frozenset(), frozenset()),
    "licence": (frozenset({"units"}), frozenset({"units"})),
    "seat": (frozenset({"units", "members"}), frozenset({"units", "members"})),
    "tier": (frozenset({"owner"}), frozenset({"owner", "billing", "billing_day"})),
}


def _account_problem(account: Account, plan: Plan) -> str | None:
    """Why `account`'s plan-specific fields do not fit its plan's kind, naming the field."""
    required, allowed = _ACCOUNT_FIELDS[plan.kind]
    given = {name for name in ("units", "members", "owner", "billing", "billing_day")
             if getattr(account, name) is not None}
    for name in sorted(required - given):
        return f"{name}: needed by {plan.kind} plan {account.plan!r}"
    for name in sorted(given - allowed):
        return f"{name}: not used by {plan.kind} plan {account.plan!r}"
    if isinstance(plan, SeatPlan) and account.units is not None and account.members:
        shortage = seat_shortage(seats=account.units, members=account.members)
        if shortage:
            return f"units: {shortage}"
    if account.billing_day is not None and account.billing_day == account.start_date.day:
        return "billing_day: same as the start date's day; leave it out"
    return None


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    plans: dict[str, Plan] = Field(default_factory=dict)
    accounts: tuple[Account, ...] = ()
    tax: TaxTable | None = None

    @field_validator("plans", mode="before")
    @classmethod
    def _default_kind(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {
            name: {"kind": "mau", **plan} if isinstance(plan, dict) and "kind" not in plan
            else plan
            for name, plan in value.items()
        }

    @model_validator(mode="after")
    def _consistent(self) -> Catalog:
        seen: set[str] = set()
        for index, account in enumerate(self.accounts):
            if account.plan not in self.plans:
                raise ValueError(f"accounts.{index}.plan: unknown plan {account.plan!r}")
            problem = _account_problem(account, self.plans[account.plan])
            if problem:
                raise ValueError(f"accounts.{index}.{problem}")
            if account.billing_address is not None and self.tax is None:
                raise ValueError(
                    f"accounts.{index}.billing_address: no top-level 'tax' table to apply it to"
                )
            if account.team in seen:
                raise ValueError(f"accounts.{index}.team: duplicate team {account.team!r}")
            seen.add(account.team)
        return self

    def account(self, team: str) -> Account | None:
        return next((a for a in self.accounts if a.team == team), None)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = list(err["loc"])
    if len(loc) > 2 and loc[0] == "plans" and loc[2] in PLAN_KINDS:
        del loc[2]  # the union's tag: "plans.daniel.unit_price", not "...mau_minimum.unit_price"
    where = ".".join(str(part) for part in loc)
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


class _CatalogLoader(yaml.SafeLoader):
    """Safe YAML without implicit timestamps: dates reach pydantic as text, so a bad date
    is reported with its field name rather than as a bare YAML error."""


_CatalogLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse_catalog(text: str, *, origin: str = "catalog") -> Catalog:
    try:
        raw = yaml.load(text, Loader=_CatalogLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise CatalogError(f"{origin}:{line} is not valid YAML") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise CatalogError(f"{origin}: top level must be a mapping with 'plans' and 'accounts'")
    try:
        return Catalog.model_validate(raw)
    except ValidationError as exc:
        raise CatalogError(f"{origin}: {_first_error(exc)}") from exc


def load_catalog(path: Path) -> Catalog:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read catalog ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    return parse_catalog(text, origin=str(path))
