"""Accounts without pydantic, for lists of a million; and the usage alerts an account holds.

Pydantic costs ~7 us per account. An account whose every value is one the model keeps as it
is (after the same checks the model makes) is built directly, as model_construct would;
any other account goes to pydantic as the loader's mapping, so its result or its error is
pydantic's. `FAST_FIELDS` mirrors the fields of `schemas.catalog.Account` (the model is
passed in: that module imports this one). An account's `alerts` (UsageAlert, defined here
so that the fast check can build them) are validated by pydantic, remembered by their tokens.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from operator import methodcaller
from typing import Annotated, Any, Final, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from schemas._catalog_loader import STR_TAG
from schemas._catalog_yaml import (
    AccountList,
    Kind,
    Loaded,
    MappingEntry,
    NullEntry,
    ScalarEntry,
    SequenceEntry,
    Shape,
    Split,
    plain_tag,
    scalar,
    scalar_groups,
)
from schemas.limits import PAYMENT_TERMS_PATTERN, TEAM_ID_PATTERN, date_problem, team_id_problem
from schemas.plans import MAX_QUANTITY, Billing, BillingAddress, Currency, Money

__all__ = [
    "ALERT_KINDS",
    "FAST_FIELDS",
    "MAX_SHARE",
    "AccountReader",
    "AlertAmount",
    "AlertKind",
    "UsageAlert",
    "check_team",
    "check_zone",
    "unique_alerts",
]


def check_team(value: str) -> str:
    """`value` if it is a team id (schemas/limits.py); else a ValueError saying why not."""
    problem = team_id_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def check_zone(value: str) -> str:
    """`value` if it names an IANA time zone; else a ValueError saying so."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"unknown IANA time zone {value!r}") from exc
    return value


AlertKind = Literal["mau", "included_share", "estimate"]
ALERT_KINDS: tuple[AlertKind, ...] = ("mau", "included_share", "estimate")
# The largest share of a plan's included users an alert may name (10: ten times as many).
MAX_SHARE: Final = Decimal(10)
_SHARE_PLACES: Final = 4


class AlertAmount(BaseModel):
    """An amount of money an `estimate` alert names: more than zero, in the plan's currency
    (the catalog-wide check compares the two)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    amount: Annotated[Money, Field(gt=0)]
    currency: Currency


class UsageAlert(BaseModel):
    """A usage threshold of an account (README "Usage alerts"), exactly one of: `mau` (the
    open period's active users >= N), `included_share` (active users >= the share times the
    plan's included users: only on plans with included users), `estimate` (the running
    estimate's total >= the amount, in the plan's currency). `id` names it stably."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mau: int | None = Field(default=None, ge=1, le=MAX_QUANTITY)
    included_share: Decimal | None = Field(default=None, gt=0, le=MAX_SHARE,
                                           decimal_places=_SHARE_PLACES, allow_inf_nan=False)
    estimate: AlertAmount | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> UsageAlert:
        given = [kind for kind in ALERT_KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            named = f" (got {', '.join(given)})" if given else ""
            raise ValueError(f"give exactly one of mau, included_share, estimate{named}")
        return self

    @property
    def kind(self) -> AlertKind:
        if self.mau is not None:
            return "mau"
        return "included_share" if self.included_share is not None else "estimate"

    @property
    def id(self) -> str:
        """`mau>=100`, `share>=0.8`, `estimate>=120.00EUR`: the threshold as written."""
        if self.mau is not None:
            return f"mau>={self.mau}"
        if self.included_share is not None:
            return f"share>={self.included_share}"
        assert self.estimate is not None  # noqa: S101 - _exactly_one holds it
        return f"estimate>={self.estimate.amount}{self.estimate.currency}"


def unique_alerts(alerts: tuple[UsageAlert, ...]) -> tuple[UsageAlert, ...]:
    """`alerts` if no two name the same threshold; else a ValueError naming the repeat."""
    seen: set[str] = set()
    for index, alert in enumerate(alerts):
        if alert.id in seen:
            raise ValueError(f"alert {index} ({alert.id!r}) repeats an earlier one")
        seen.add(alert.id)
    return alerts


class _Reject(Exception):
    """Not a value the fast checks vouch for: pydantic validates this account."""


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _text(value: object) -> str:
    if type(value) is not str:
        raise _Reject
    return value


def _name(value: object) -> str:
    if type(value) is not str or not value:
        raise _Reject
    return value


_TEAM_ID = re.compile(TEAM_ID_PATTERN).fullmatch  # team_id_problem's rule, without a call


def _team(value: object) -> str:
    if type(value) is not str or _TEAM_ID(value) is None:
        raise _Reject
    return value


def _start_date(value: object) -> date:
    # pydantic reads YYYY-MM-DD as date.fromisoformat does (tests/unit/test_catalog_scale.py).
    if not _ISO_DATE.fullmatch(_text(value)):
        raise _Reject
    try:
        day = date.fromisoformat(str(value))
    except ValueError as exc:
        raise _Reject from exc
    if date_problem(day, "date") is not None:
        raise _Reject
    return day


def _zone(value: object) -> str:
    try:
        return check_zone(_text(value))
    except ValueError as exc:
        raise _Reject from exc


def _address(value: object) -> BillingAddress | None:
    if value is None:
        return None
    if type(value) is not dict:
        raise _Reject
    try:
        return BillingAddress.model_validate(value)  # as pydantic validates the field
    except ValidationError as exc:
        raise _Reject from exc


_TERMS = re.compile(PAYMENT_TERMS_PATTERN).fullmatch


def _terms(value: object) -> str:
    if type(value) is not str or _TERMS(value) is None:
        raise _Reject
    return value


_ALERTS: Final = TypeAdapter(tuple[UsageAlert, ...])


def _alerts(value: object) -> tuple[UsageAlert, ...]:
    """A list of alerts as the model keeps it (validated by pydantic, as the field is);
    anything else, and any list pydantic refuses, is left to pydantic with the account."""
    if type(value) is not list:
        raise _Reject
    try:
        return unique_alerts(_ALERTS.validate_python(value))
    except (ValidationError, ValueError) as exc:
        raise _Reject from exc


def _optional(check: Callable[[object], object]) -> Callable[[object], object]:
    return lambda value: None if value is None else check(value)


def _between(low: int, high: int | None = None) -> Callable[[object], int]:
    def check(value: object) -> int:
        if type(value) is not int or value < low or (high is not None and value > high):
            raise _Reject
        return value
    return check


def _one_of(choices: tuple[str, ...]) -> Callable[[object], str]:
    def check(value: object) -> str:
        if _text(value) not in choices:
            raise _Reject
        return str(value)
    return check


# Per field of Account: the check that passes a value exactly when the field keeps it as
# it is (dates: as date.fromisoformat reads them; addresses: as pydantic validates them),
# and whether to remember checked values (not for those new on nearly every account).
FAST_FIELDS: dict[str, tuple[Callable[[object], object], bool]] = {
    "team": (_team, False),
    "plan": (_text, True),
    "start_date": (_start_date, True),
    "timezone": (_zone, True),
    "billing_address": (_address, True),
    "units": (_optional(_between(0, MAX_QUANTITY)), True),
    "members": (_optional(_between(1, MAX_QUANTITY)), True),
    "owner": (_optional(_name), False),
    "billing": (_optional(_one_of(get_args(Billing))), True),
    "billing_day": (_optional(_between(1, 31)), True),
    "dunning": (_optional(_name), True),
    "payment_terms": (_optional(_terms), True),
    "billing_account": (_optional(_team), True),
    "alerts": (_alerts, True),
}

_MAX_REMEMBERED = 1 << 16  # checked values remembered per field and token kind, or address


class _Checked(dict[str, Any]):
    """Token text -> the value the model keeps for it, for one field and kind of token."""

    def __init__(self, name: str, kind: Kind) -> None:
        super().__init__()
        self.check, self.kind = FAST_FIELDS[name][0], kind

    def __missing__(self, text: str) -> Any:
        value = self.check(scalar(self.kind, text))
        if len(self) < _MAX_REMEMBERED:
            self[text] = value
        return value


def _fresh(name: str, entry: ScalarEntry) -> Callable[[re.Match[str]], Any]:
    """Match -> the value the model keeps, for a field new on nearly every account."""
    check, kind, group = FAST_FIELDS[name][0], entry.kind, entry.group

    def convert(match: re.Match[str]) -> Any:
        text = match[group]
        if kind == "plain" and plain_tag(text) == STR_TAG:
            return check(text)  # the common case, without scalar()'s dispatch
        return check(scalar(kind, text))
    return convert


def _nested(name: str, entry: MappingEntry | SequenceEntry) -> Callable[[re.Match[str]], Any]:
    """Match -> the value the model keeps, for a mapping (an address) or a list of them
    (alerts), by its tokens."""
    check = FAST_FIELDS[name][0]
    tokens = methodcaller("group", 0, *scalar_groups(entry))
    checked: dict[tuple[str, ...], Any] = {}

    def convert(match: re.Match[str]) -> Any:
        key = tokens(match)[1:]  # group 0 first: a tuple even for one token
        if key not in checked:
            value = check(entry.value(match))
            if len(checked) >= _MAX_REMEMBERED:
                return value
            checked[key] = value
        return checked[key]
    return convert


@dataclass(frozen=True, kw_only=True)
class _Layout:
    """How to build Accounts from the matches of one shape: the fields not in it; per
    scalar field remembered, its group and its checked values by token; per other field
    (team, owner: new on nearly every account; an address) its converter; and the fields
    given, one set for all (a frozen Account never changes its set, and model_copy copies
    it before adding to it)."""

    base: dict[str, Any]
    kept: tuple[tuple[str, int, _Checked], ...]
    converted: tuple[tuple[str, Callable[[re.Match[str]], Any]], ...]
    given: set[str]


class AccountReader:
    """Turns the items of one accounts list into instances of `model` (Account), or into
    the loader's value of the item when pydantic must judge it (`raw` counts those);
    remembers layouts and checked values. With a `judge` (the first problem of the next
    accounts, or None), judges what it builds, while it is still in the CPU's caches, as
    long as every item so far is built here; and keeps the first `problem`."""

    def __init__(self, model: type[BaseModel],
                 judge: Callable[[Sequence[Any]], str | None] | None) -> None:
        self.model, self.judge, self.raw = model, judge, 0
        self.problem: str | None = None
        self._required = frozenset(name for name, field in model.model_fields.items()
                                   if field.is_required())
        self._defaults = {  # the required ones are always given: None holds their place
            name: None if field.is_required() else field.get_default(call_default_factory=True)
            for name, field in model.model_fields.items()}
        self._layouts: dict[int, _Layout | None] = {}  # by id of the shape's pattern
        self._checked: dict[tuple[str, Kind], _Checked] = {}

    def read(self, split: Split) -> list[Any]:
        """The list's items in order; raises Unrecognised when it must be loaded whole, and
        else the first item's DuplicateKey (the whole document's loader would)."""
        items = AccountList(split)
        accounts: list[Any] = []
        for run in items.runs():
            start = len(accounts)
            if isinstance(run, Loaded):
                accounts.append(run.value)
                self.raw += 1
            else:
                self._append(items, run, accounts)
            if self.judge is not None and not self.raw and self.problem is None:
                self.problem = self.judge(accounts[start:])
        if items.duplicate is not None:
            raise items.duplicate
        return accounts

    def _append(self, items: AccountList, matches: list[re.Match[str]],
                accounts: list[Any]) -> None:
        """An Account per match, or the loader's mapping where pydantic must judge it. One
        loop with no calls it can spare: it runs once per account."""
        model, pattern, layout = self.model, None, None
        for match in matches:
            if match.re is not pattern:
                pattern, layout = match.re, self._layout(items, match)
            if layout is not None:
                try:
                    fields = layout.base.copy()
                    for name, group, checked in layout.kept:
                        fields[name] = checked[match[group]]
                    for name, convert in layout.converted:
                        fields[name] = convert(match)
                except _Reject:
                    pass
                else:
                    # What model_construct does for a model without aliases, extras or
                    # private attributes; its loop over the fields costs more than the rest.
                    account = _new(model)
                    _set(account, "__dict__", fields)
                    _set(account, "__pydantic_fields_set__", layout.given)
                    _set(account, "__pydantic_extra__", None)
                    _set(account, "__pydantic_private__", None)
                    accounts.append(account)
                    continue
            accounts.append(items.shape(match).value(match))
            self.raw += 1

    def _layout(self, items: AccountList, match: re.Match[str]) -> _Layout | None:
        key = id(match.re)  # hashing a pattern is slow; the AccountList keeps it alive
        if key not in self._layouts:
            self._layouts[key] = self._new_layout(items.shape(match))
        return self._layouts[key]

    def _new_layout(self, shape: Shape) -> _Layout | None:
        """The layout of a shape whose items may be Accounts, else None (pydantic's)."""
        keys = [entry.key for entry in shape.entries]
        given = {str(key) for key in keys}
        if (len(given) != len(keys) or not set(keys) <= FAST_FIELDS.keys()
                or not self._required <= given):
            return None
        base = dict(self._defaults)
        kept: list[tuple[str, int, _Checked]] = []
        converted: list[tuple[str, Callable[[re.Match[str]], Any]]] = []
        for entry in shape.entries:
            name = str(entry.key)
            check, remember = FAST_FIELDS[name]
            if isinstance(entry, NullEntry):
                try:
                    base[name] = check(None)
                except _Reject:
                    return None
            elif isinstance(entry, MappingEntry | SequenceEntry):
                converted.append((name, _nested(name, entry)))
            elif remember:
                checked = self._checked.setdefault((name, entry.kind), _Checked(name, entry.kind))
                kept.append((name, entry.group, checked))
            else:
                converted.append((name, _fresh(name, entry)))
        return _Layout(base=base, kept=tuple(kept), converted=tuple(converted), given=given)


_new = object.__new__
_set = object.__setattr__
