"""Plans-and-accounts catalog: the YAML file named by METERING_CATALOG (format in README).

A catalog may hold a million accounts. Their list is read by a reader that gives what the
YAML loader (schemas/_catalog_loader.py) gives (schemas/_catalog_yaml.py), the accounts
whose values pydantic would keep unchanged are built without it (schemas/_accounts.py), and
the catalog-wide checks judge alike accounts once: a million load in seconds, not minutes,
to the same Catalog or the same one-line error. Both paths hold a catalog to the same
limits: MAX_CATALOG_BYTES in all, and what the loader refuses (duplicate keys, deep
nesting, alias bombs).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import repeat
from operator import attrgetter, eq
from pathlib import Path
from typing import Annotated, Any, Final
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schemas._accounts import (
    ALERT_KINDS,
    MAX_SHARE,
    AccountReader,
    AlertAmount,
    AlertKind,
    UsageAlert,
    check_team,
    check_zone,
    unique_alerts,
)
from schemas._catalog_loader import Refused
from schemas._catalog_yaml import (
    TooLong,
    Unrecognised,
    load_document,
    load_rest,
    split_accounts,
)
from schemas.lifecycle import DEFAULT_DUNNING, DunningPolicy
from schemas.limits import PAYMENT_TERMS_PATTERN
from schemas.periods import BillingCalendar
from schemas.plans import (
    MAX_QUANTITY,
    Billing,
    BillingAddress,
    LicencePlan,
    MauMinimumPlan,
    MauPlan,
    SeatPlan,
    StoreDate,
    TaxTable,
    TierPlan,
    seat_shortage,
)

__all__ = [
    "ALERT_KINDS",
    "MAX_CATALOG_BYTES",
    "MAX_SHARE",
    "Account",
    "AlertAmount",
    "AlertKind",
    "Catalog",
    "CatalogError",
    "Plan",
    "UsageAlert",
    "load_catalog",
    "parse_catalog",
]


# The largest catalog read, in bytes of UTF-8, checked before parsing: a million accounts
# in the usual layouts fit with every optional field, and the fast reader loads 3 million
# (250 MiB) in about 30 s and 2 GiB. The full YAML loader reads far less (MAX_LOADER_CHARS),
# so beyond that only accounts in the usual layouts (README) are read. Not a setting: a
# catalog this size is a bug or an attack, and the worker and the API load it too.
MAX_CATALOG_BYTES: Final = 256 * 2**20


class CatalogError(ValueError):
    """A catalog that cannot be used; the message is one line naming what is wrong."""


class Account(BaseModel):
    """A billed team; the day of month of `start_date` is its billing anchor.

    Any plan: `dunning` names the catalog's policy for failed payments (else the plan's,
    else the catalog's `default`, else DEFAULT_DUNNING); `payment_terms` ("NET 30", seed
    000: invoiced billing on PO) makes invoices due that many days after their date instead
    of charged at once; `billing_account` groups teams billed to one customer, each team
    still invoiced separately; `alerts` lists its usage thresholds (UsageAlert), each
    published once per period when crossed.

    Licence and seat plans: `units` bought on the start date; seat plans also the `members`
    (owner included) the seats must hold. Tier plans: the subscription `owner`, `billing`
    monthly or annual, and `billing_day` when billing is not on the start date's day (the
    first month is then prorated up to the first billing day).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # schemas/_accounts.py `FAST_FIELDS` passes exactly the values these fields keep as
    # they are: change both together (tests/unit/test_catalog_scale.py holds them together).
    team: str  # a team id (schemas/limits.py): one safe path segment of the API
    plan: str
    start_date: StoreDate
    timezone: str = "UTC"
    billing_address: BillingAddress | None = None  # taxed by the catalog's `tax` table
    units: int | None = Field(default=None, ge=0, le=MAX_QUANTITY)
    members: int | None = Field(default=None, ge=1, le=MAX_QUANTITY)
    owner: str | None = Field(default=None, min_length=1)
    billing: Billing | None = None
    billing_day: int | None = Field(default=None, ge=1, le=31)
    dunning: str | None = Field(default=None, min_length=1)  # a policy of the catalog's
    payment_terms: str | None = Field(default=None, pattern=PAYMENT_TERMS_PATTERN)
    billing_account: str | None = None  # groups teams billed to one customer (seed 000)
    alerts: tuple[UsageAlert, ...] = ()  # usage thresholds, published once per period

    @field_validator("alerts")
    @classmethod
    def _distinct_alerts(cls, value: tuple[UsageAlert, ...]) -> tuple[UsageAlert, ...]:
        return unique_alerts(value)

    @field_validator("billing_account")
    @classmethod
    def _account_id(cls, value: str | None) -> str | None:
        return None if value is None else check_team(value)

    @property
    def terms_days(self) -> int | None:
        """Days from an invoice to its due date under `payment_terms` ("NET 30": 30), or None
        for an account charged by card when invoiced."""
        return None if self.payment_terms is None else int(self.payment_terms.split()[1])

    @field_validator("team")
    @classmethod
    def _team_id(cls, value: str) -> str:
        return check_team(value)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return check_zone(value)

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
    return _alerts_problem(account, plan) if account.alerts else None


def _includes_users(plan: Plan) -> bool:
    """Whether `plan` includes active users in its base fee (a share of them can alert)."""
    return isinstance(plan, MauPlan) and plan.included_users > 0


def _alerts_problem(account: Account, plan: Plan) -> str | None:
    """Why an alert of `account` cannot apply to its plan, naming the alert and what the plan
    has instead (`_named` adds the team)."""
    for index, alert in enumerate(account.alerts):
        where = f"alerts.{index}.{alert.kind}: alert {alert.id!r}"
        if alert.estimate is not None and alert.estimate.currency != plan.currency:
            return (f"{where} is in {alert.estimate.currency}, but plan {account.plan!r} "
                    f"bills in {plan.currency}")
        if alert.included_share is not None and not _includes_users(plan):
            return (f"{where} needs included users, and {plan.kind} plan {account.plan!r} "
                    "includes none")
    return None


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    plans: dict[str, Plan] = Field(default_factory=dict)
    accounts: tuple[Account, ...] = ()
    tax: TaxTable | None = None
    dunning: dict[str, DunningPolicy] = Field(default_factory=dict)

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
        problem = _policy_problem(self)
        if problem:
            raise ValueError(problem)
        problem = _accounts_problem(self.accounts, self.plans, self.tax)
        if problem:
            raise ValueError(problem)
        return self

    def policy(self, account: Account) -> DunningPolicy:
        """The dunning policy of `account`: its own, its plan's, the catalog's `default`, or
        DEFAULT_DUNNING."""
        name = account.dunning or self.plans[account.plan].dunning or "default"
        return self.dunning.get(name, DEFAULT_DUNNING)

    def billing_account(self, name: str) -> list[Account]:
        """The accounts grouped under billing account `name`, in catalog order (from an index
        built on the first call)."""
        cached = self.__dict__.get(_GROUP_INDEX)
        if cached is None or cached[0] is not self.accounts:
            groups: dict[str, list[Account]] = {}
            for account in self.accounts:
                if account.billing_account is not None:
                    groups.setdefault(account.billing_account, []).append(account)
            cached = (self.accounts, groups)
            self.__dict__[_GROUP_INDEX] = cached
        return list(cached[1].get(name, ()))

    def alert_accounts(self) -> tuple[Account, ...]:
        """The accounts with `alerts`, in byte order of team (kept after the first call)."""
        cached = self.__dict__.get(_ALERT_INDEX)
        if cached is None or cached[0] is not self.accounts:
            alerting = tuple(sorted((account for account in self.accounts if account.alerts),
                                    key=_TEAM))
            cached = (self.accounts, alerting)
            self.__dict__[_ALERT_INDEX] = cached
        return cached[1]

    def account(self, team: str) -> Account | None:
        """The account of `team`, from a dict of teams built on the first call."""
        cached = self.__dict__.get(_TEAM_INDEX)
        if cached is None or cached[0] is not self.accounts:  # model_copy copies it along
            cached = (self.accounts, _team_index(self.accounts))
            self.__dict__[_TEAM_INDEX] = cached
        return cached[1].get(team)


def _policy_problem(catalog: Catalog) -> str | None:
    """The first plan or account naming a dunning policy the catalog does not define."""
    known = catalog.dunning
    for name, plan in catalog.plans.items():
        if plan.dunning is not None and plan.dunning not in known:
            return f"plans.{name}.dunning: no dunning policy {plan.dunning!r} in the catalog"
    named = {account.dunning for account in catalog.accounts}
    named.discard(None)
    for policy in sorted(name for name in named if name is not None and name not in known):
        team = next(a.team for a in catalog.accounts if a.dunning == policy)
        return f"accounts: team {team!r}: no dunning policy {policy!r} in the catalog"
    return None


_GROUP_INDEX = "_group_index"
_ALERT_INDEX = "_alert_index"
_TEAM_INDEX = "_team_index"  # kept in the instance dict: pydantic ignores keys not fields


def _team_index(accounts: Sequence[Account]) -> dict[str, Account]:
    index: dict[str, Account] = {}
    for account in accounts:
        index.setdefault(account.team, account)  # the first, as a scan would find
    return index


_TEAM, _PLAN = attrgetter("team"), attrgetter("plan")
_TEAM_PLAN_ADDRESS = attrgetter("team", "plan", "billing_address")
# What `_account_problem` reads besides the plan: accounts alike in these fit alike, and
# an account with none of them (nor an address) fits as any other of its plan.
_OPTIONS = attrgetter("units", "members", "owner", "billing", "billing_day")
_NO_OPTIONS = (None,) * 5
_OPTIONS_ADDRESS = attrgetter("units", "members", "owner", "billing", "billing_day",
                              "billing_address", "alerts")
_NOTHING_ELSE = (None,) * 6 + ((),)
_MAX_JUDGED = 4096  # kinds of account remembered; beyond them each is judged afresh


def _accounts_problem(accounts: Sequence[Account], plans: Mapping[str, Plan],
                      tax: TaxTable | None) -> str | None:
    """The first account that does not fit the catalog, as `accounts.N.field: why`."""
    return _Fit(plans, tax).problem(accounts)


class _Fit:
    """Judges, in order and a part at a time, whether accounts fit a catalog's plans and tax
    table; accounts alike in what `_account_problem` reads are judged once."""

    def __init__(self, plans: Mapping[str, Plan], tax: TaxTable | None) -> None:
        self.plans, self.tax = plans, tax
        self.seen: set[str] = set()
        self.judged: dict[Hashable, str | None] = {}
        self.count = 0  # accounts judged so far

    def problem(self, accounts: Sequence[Account]) -> str | None:
        """The first of these accounts, the ones after those judged before, that does not
        fit the catalog, as `accounts.N.field: why`."""
        if self._plainly_fit(accounts):
            return None
        plans, seen, judged = self.plans, self.seen, self.judged
        for index, account in enumerate(accounts, self.count):
            team, plan_name, address = _TEAM_PLAN_ADDRESS(account)
            plan = plans.get(plan_name)
            if plan is None:
                return f"accounts.{index}.plan: unknown plan {plan_name!r}"
            options = _OPTIONS(account)
            alike = plan_name if options == _NO_OPTIONS else _alike(account)
            if account.alerts:
                alike = (alike, account.alerts)
            try:
                problem = judged[alike]
            except KeyError:
                problem = _account_problem(account, plan)
                if len(judged) < _MAX_JUDGED:
                    judged[alike] = problem
            if problem:
                return f"accounts.{index}.{_named(problem, team)}"
            if address is not None and self.tax is None:
                return (f"accounts.{index}.billing_address: no top-level 'tax' table to apply "
                        "it to")
            if team in seen:
                return f"accounts.{index}.team: duplicate team {team!r}"
            seen.add(team)
        self.count += len(accounts)
        return None

    def _plainly_fit(self, accounts: Sequence[Account]) -> bool:
        """Whether these accounts fit as the loop in `problem` would find, judged a list at a
        time: none with options, an address or alerts, each plan known and judged fine (for such
        accounts the plan alone decides), each team new. Then they count as judged."""
        if not all(map(eq, map(_OPTIONS_ADDRESS, accounts), repeat(_NOTHING_ELSE))):
            return False
        for plan_name in set(map(_PLAN, accounts)):
            plan = self.plans.get(plan_name)
            if plan is None:
                return False
            if plan_name not in self.judged:
                example = next(account for account in accounts if account.plan == plan_name)
                self.judged[plan_name] = _account_problem(example, plan)
            if self.judged[plan_name]:
                return False
        teams = set(map(_TEAM, accounts))
        if len(teams) != len(accounts) or not self.seen.isdisjoint(teams):
            return False
        self.seen |= teams
        self.count += len(accounts)
        return True


def _named(problem: str, team: str) -> str:
    """`problem` naming the team too, when it is about an alert."""
    if not problem.startswith("alerts."):
        return problem
    where, why = problem.split(": ", 1)
    return f"{where}: team {team!r}: {why}"


def _alike(account: Account) -> tuple[Any, ...]:
    """All `_account_problem` reads of an account with options, owner aside (only given)."""
    day = account.billing_day
    return (account.plan, account.units, account.members, account.owner is None,
            account.billing is None, day, day is not None and account.start_date.day)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = list(err["loc"])
    if len(loc) > 2 and loc[0] == "plans" and loc[2] in PLAN_KINDS:
        del loc[2]  # the union's tag: "plans.daniel.unit_price", not "...mau_minimum.unit_price"
    where = ".".join(str(part) for part in loc)
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def parse_catalog(text: str, *, origin: str = "catalog") -> Catalog:
    """The catalog in `text`, or a one-line CatalogError starting with `origin`.

    The accounts list is read by the fast reader when it can vouch for reading it as the
    YAML loader would, and accounts are built without pydantic where their values need no
    converting; otherwise the loader and pydantic do it all. Either way the catalog, or the
    error, is the same.
    """
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_CATALOG_BYTES:
        raise CatalogError(_too_large(origin))
    with _collector_paused():
        fast = _parse_fast(text, origin)
        return fast if fast is not None else _parse_slow(text, origin=origin)


def _too_large(origin: str) -> str:
    return (f"{origin}: larger than {MAX_CATALOG_BYTES:,} bytes "
            f"({MAX_CATALOG_BYTES // 2**20} MiB), the most a catalog may be")


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a catalog is built: with a million accounts
    (no cycles among them) its full collections, each walking every account made so far,
    cost more than the parse. Left alone when the application has already turned it off."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _parse_fast(text: str, origin: str) -> Catalog | None:
    """parse_catalog with the fast accounts reader; None when it cannot vouch for the text.

    Pydantic reports field errors before the catalog-wide checks, plans before accounts
    before the tax table: so the catalog is assembled from its parts only when every
    account was built here and the rest is valid; else pydantic validates the whole.
    """
    split = split_accounts(text)
    rest = load_rest(split) if split is not None else None
    if split is None or rest is None:
        return None
    try:
        shell: Catalog | None = Catalog.model_validate({**rest, "accounts": ()})
    except ValidationError:
        shell = None
    judge = _Fit(shell.plans, shell.tax).problem if shell is not None else None
    reader = AccountReader(Account, judge)
    try:
        accounts = reader.read(split)
    except Unrecognised:
        return None
    except Refused as exc:
        raise CatalogError(_refused(origin, exc)) from exc
    if shell is None or reader.raw:
        return _validate({**rest, "accounts": accounts}, origin)
    if reader.problem is not None:
        raise CatalogError(f"{origin}: {reader.problem}")
    return shell.model_copy(update={"accounts": tuple(accounts)})


def _parse_slow(text: str, *, origin: str = "catalog") -> Catalog:
    """parse_catalog with the YAML loader reading the whole document."""
    try:
        raw = load_document(text)
    except TooLong as exc:
        raise CatalogError(
            f"{origin}: more than {exc.limit:,} characters for the full YAML loader; a "
            "larger catalog must write its accounts in the usual layouts (README, Catalog "
            "file: a flow mapping or one field per line, no anchors, tags or escapes)") from exc
    except Refused as exc:
        raise CatalogError(_refused(origin, exc)) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise CatalogError(f"{origin}:{line} is not valid YAML") from exc
    return _validate(raw, origin)


def _refused(origin: str, exc: Refused) -> str:
    return f"{origin}: line {exc.line}: {exc.problem}"


def _validate(raw: Any, origin: str) -> Catalog:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise CatalogError(f"{origin}: top level must be a mapping with 'plans' and 'accounts'")
    try:
        return Catalog.model_validate(raw)
    except ValidationError as exc:
        raise CatalogError(f"{origin}: {_first_error(exc)}") from exc


def load_catalog(path: Path) -> Catalog:
    """The catalog in the file at `path`; a file larger than MAX_CATALOG_BYTES is refused
    before it is read (a pipe or device, whose size is unknown, is read only that far)."""
    return parse_catalog(_read(path), origin=str(path))


def _read(path: Path) -> str:
    """The text of the file at `path`, its bytes let go before it is parsed."""
    try:
        with path.open("rb") as file:
            if os.fstat(file.fileno()).st_size > MAX_CATALOG_BYTES:
                raise CatalogError(_too_large(str(path)))
            data = file.read(MAX_CATALOG_BYTES + 1)
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read catalog ({exc.strerror})") from exc
    if len(data) > MAX_CATALOG_BYTES:
        raise CatalogError(_too_large(str(path)))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CatalogError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    if "\r" in text:  # line ends as a file read as text has them
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text
