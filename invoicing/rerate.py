"""Pricing what-if: the invoices of the billing dates FROM..TO rated again under a candidate
catalog by the close's own code, from what the store holds, and compared with those issued.

`HiddenFrom` is the store as the close reads it (`CloseLog`), read only, with every stored
document dated FROM or later hidden: the close then finds those invoices due again and rates
them under the candidate, each later one seeing what the candidate billed before it (the
close chains a team's invoices: usage billed, adjustments), while invoices before FROM stand
as issued. `rerate` runs `close` on the candidate's teams batch by batch as of the end of TO
plus grace (or now, if earlier: what is not due yet is not rated), keeping what the close
hands to `issue` instead of recording it: one code path with the close, no second rater.
A batch whose history the candidate cannot apply (CloseError) is halved until the failing
teams stand alone; each is listed with the reason and left out of every figure.

`compare` is the rule: per team and currency, the totals of the invoices dated FROM..TO as
issued and as the candidate would issue them, their difference (candidate - issued), and
the same per currency. Credit notes are not rated again (they mirror issued invoices) and
count on neither side. Teams are the candidate's: a team it drops is not compared.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from operator import attrgetter
from typing import Any, Final, NamedTuple, Protocol, TypeVar

from aggregation import (
    DayKey,
    PeriodCount,
    StoredChange,
    StoredInvoice,
    billed_usage_of,
    issued_keys_of,
)
from invoicing.close import DEFAULT_BATCH_TEAMS, CloseError, CloseLog, NotInvoiced, close
from invoicing.errors import BillingRuleError
from invoicing.money import format_amount, sum_amounts, zero
from schemas import Account, Catalog, date_problem

__all__ = [
    "MAX_RERATE_DAYS",
    "CurrencyTotal",
    "HiddenFrom",
    "Priced",
    "Rerate",
    "RerateError",
    "Skipped",
    "TeamFigures",
    "UnknownTeam",
    "compare",
    "range_problem",
    "rerate",
    "rerate_as_of",
    "rerate_json",
]

# The longest range rated at once, in billing dates: a year, leap day included. Each date of
# the range is rated again for every team, so a decade is a mistake, not a question.
MAX_RERATE_DAYS: Final = 366

Windows = Callable[[Catalog], NotInvoiced]


class RerateError(ValueError):
    """A what-if that cannot run as asked (a range out of bounds); one line."""


class UnknownTeam(RerateError):
    """A team the candidate catalog does not hold."""


@dataclass(frozen=True, slots=True)
class TeamFigures:
    """One team's invoices dated FROM..TO in one currency, as issued and under the candidate."""

    team: str
    currency: str
    issued: Decimal
    candidate: Decimal
    issued_invoices: int
    candidate_invoices: int

    @property
    def difference(self) -> Decimal:
        return sum_amounts((self.candidate, -self.issued), self.currency)


@dataclass(frozen=True, slots=True)
class CurrencyTotal:
    currency: str
    issued: Decimal
    candidate: Decimal

    @property
    def difference(self) -> Decimal:
        return sum_amounts((self.candidate, -self.issued), self.currency)


@dataclass(frozen=True, slots=True)
class Skipped:
    """A team whose history the candidate cannot apply, and why."""

    team: str
    reason: str


@dataclass(frozen=True, slots=True)
class Rerate:
    first_day: date
    last_day: date
    as_of: datetime
    teams: tuple[TeamFigures, ...]  # by team, then currency
    totals: tuple[CurrencyTotal, ...]  # by currency
    skipped: tuple[Skipped, ...]  # by team


def range_problem(first_day: date, last_day: date) -> str | None:
    """Why FROM..TO cannot be rated, or None: each date within the store's dates, FROM not
    after TO, at most MAX_RERATE_DAYS billing dates."""
    problem = date_problem(first_day, "--from date") or date_problem(last_day, "--to date")
    if problem:
        return problem
    if first_day > last_day:
        return f"--from {first_day} is after --to {last_day}"
    days = (last_day - first_day).days + 1
    if days > MAX_RERATE_DAYS:
        return (f"{first_day}..{last_day} spans {days:,} days; a rerate covers at most "
                f"{MAX_RERATE_DAYS}")
    return None


def rerate_as_of(last_day: date, grace: timedelta, now: datetime) -> datetime:
    """The moment the close is run as of: the end of `last_day` in UTC plus grace, when every
    billing date through it is due in every zone; `now` if earlier."""
    end = datetime.combine(last_day, time.max, tzinfo=UTC) + grace
    return min(end, now)


class Priced(Protocol):
    """What the comparison reads of an invoice (schemas.Invoice has it)."""

    @property
    def team(self) -> str: ...

    @property
    def currency(self) -> str: ...

    @property
    def total(self) -> str: ...

    @property
    def document(self) -> str: ...


class _Totals:
    """Sums per (team, currency) and per currency, invoice by invoice."""

    def __init__(self) -> None:
        self.sums: dict[tuple[str, str], list[Decimal]] = {}  # issued, candidate
        self.counts: dict[tuple[str, str], list[int]] = {}

    def add(self, invoice: Priced, side: int) -> None:
        key = (invoice.team, invoice.currency)
        sums = self.sums.setdefault(key, [zero(invoice.currency), zero(invoice.currency)])
        sums[side] = sum_amounts((sums[side], Decimal(invoice.total)), invoice.currency)
        self.counts.setdefault(key, [0, 0])[side] += 1

    def figures(self) -> tuple[list[TeamFigures], list[CurrencyTotal]]:
        teams: list[TeamFigures] = []
        for key in sorted(self.sums):
            (issued, candidate), (issued_count, candidate_count) = self.sums[key], self.counts[key]
            teams.append(TeamFigures(*key, issued, candidate, issued_count, candidate_count))
        per: dict[str, list[Decimal]] = {}
        for row in teams:
            total = per.setdefault(row.currency, [zero(row.currency), zero(row.currency)])
            total[0] = sum_amounts((total[0], row.issued), row.currency)
            total[1] = sum_amounts((total[1], row.candidate), row.currency)
        return teams, [CurrencyTotal(currency, per[currency][0], per[currency][1])
                       for currency in sorted(per)]


def compare(issued: Iterable[Priced], candidate: Iterable[Priced]
            ) -> tuple[list[TeamFigures], list[CurrencyTotal]]:
    """Per team and currency, then per currency: the totals of the `issued` invoices and of
    the `candidate` ones (credit notes count on neither side)."""
    totals = _Totals()
    for side, invoices in enumerate((issued, candidate)):
        for invoice in invoices:
            if invoice.document == "invoice":
                totals.add(invoice, side)
    return totals.figures()


class _Teamed(Protocol):
    @property
    def team(self) -> str: ...


T = TypeVar("T", bound=_Teamed)


class HiddenFrom:
    """A read-only `CloseLog` over `store` without the documents dated `first_day` or later.

    What a range of teams holds is read once and kept until a range outside it is asked for,
    so that a batch rated again in parts reads the store once. Safe to share between the
    close's threads."""

    def __init__(self, store: CloseLog, first_day: date) -> None:
        self.store, self.first_day = store, first_day
        self._lock = threading.Lock()
        self._window: tuple[str, str] | None = None
        self._kept: dict[str, list[Any]] = {}  # per read, the window's rows

    def _rows(self, name: str, first: str, last: str,
              read: Callable[[str, str], list[T]]) -> list[T]:
        """The rows of `read` for the teams `first`..`last`, from those kept for the window
        when it holds them; else the window moves there."""
        with self._lock:
            window = self._window
            if window is None or not window[0] <= first <= last <= window[1]:
                window = self._window = (first, last)
                self._kept = {}
            if name not in self._kept:
                self._kept[name] = read(*window)
            rows: list[T] = self._kept[name]
        if window == (first, last):
            return list(rows)
        return [row for row in rows if first <= row.team <= last]

    def _all_invoices(self, first: str, last: str) -> list[StoredInvoice]:
        return sorted(self.store.invoices_between(first, last), key=attrgetter("key"))

    def stored(self, first: str, last: str) -> list[StoredInvoice]:
        """Every stored document of the teams `first`..`last`, hidden ones too, by key."""
        return self._rows("invoices", first, last, self._all_invoices)

    def invoices_between(self, first: str, last: str) -> list[StoredInvoice]:
        return [invoice for invoice in self.stored(first, last)
                if invoice.invoice_date < self.first_day]

    def issued_keys(self, first: str, last: str) -> dict[str, set[DayKey]]:
        return issued_keys_of(self.invoices_between(first, last))

    def billed_usage(self, first: str, last: str) -> list[PeriodCount]:
        return billed_usage_of(self.invoices_between(first, last))

    def period_mau(self, first: str, last: str) -> list[PeriodCount]:
        return self._rows("mau", first, last, self.store.period_mau)

    def changes_between(self, first: str, last: str) -> list[StoredChange]:
        return self._rows("changes", first, last, self.store.changes_between)


@dataclass(frozen=True, slots=True)
class _Run:
    view: HiddenFrom
    catalog: Catalog
    as_of: datetime
    grace: timedelta
    windows: Windows | None

    def rate(self, accounts: Sequence[Account]) -> tuple[list[StoredInvoice], list[Skipped]]:
        """What the close issues for `accounts` under the candidate; a part whose history
        cannot apply is halved until the failing teams stand alone, each skipped."""
        part = self.catalog.model_copy(update={"accounts": tuple(accounts)})
        new: list[StoredInvoice] = []
        try:
            windows = self.windows(part) if self.windows is not None else {}
            close(store=self.view, catalog=part, as_of=self.as_of, grace=self.grace,
                  issue=new.extend, batch_teams=len(accounts), not_invoiced=windows)
        except (CloseError, BillingRuleError) as exc:
            if len(accounts) == 1:
                return [], [Skipped(accounts[0].team, str(exc))]
            half = len(accounts) // 2
            left, left_skipped = self.rate(accounts[:half])
            right, right_skipped = self.rate(accounts[half:])
            return left + right, left_skipped + right_skipped
        return new, []


class _Document(NamedTuple):
    """What the comparison reads of a stored document, without building the invoice."""

    team: str
    currency: str
    total: str
    document: str


def _documents(invoices: Iterable[StoredInvoice], first_day: date, last_day: date,
               skipped: set[str]) -> Iterator[_Document]:
    for stored in invoices:
        if first_day <= stored.invoice_date <= last_day and stored.team not in skipped:
            body = json.loads(stored.body)
            yield _Document(stored.team, body["currency"], body["total"],
                            body.get("document", "invoice"))


def rerate(
    *,
    store: CloseLog,
    catalog: Catalog,
    first_day: date,
    last_day: date,
    now: datetime,
    grace: timedelta,
    team: str | None = None,
    batch_teams: int = DEFAULT_BATCH_TEAMS,
    not_invoiced: Windows | None = None,
) -> Rerate:
    """The invoices dated `first_day`..`last_day` of `team` or every team of the candidate
    `catalog`, as issued and as the close would issue them under it (module doc); nothing
    is written. `not_invoiced` gives, for a catalog of some of the teams, the windows their
    lifecycle keeps from being invoiced (invoicing.close). RerateError for a range out of
    bounds (`range_problem`), UnknownTeam for a team the candidate lacks."""
    problem = range_problem(first_day, last_day)
    if problem:
        raise RerateError(problem)
    if batch_teams < 1:
        raise ValueError(f"batch_teams must be >= 1, got {batch_teams}")
    if team is None:
        accounts = sorted(catalog.accounts, key=attrgetter("team"))
    else:
        account = catalog.account(team)
        if account is None:
            raise UnknownTeam(f"unknown team {team!r}: not in the candidate catalog")
        accounts = [account]
    as_of = rerate_as_of(last_day, grace, now)
    view = HiddenFrom(store, first_day)
    run = _Run(view, catalog, as_of, grace, not_invoiced)
    totals = _Totals()
    skipped: list[Skipped] = []
    for start in range(0, len(accounts), batch_teams):
        batch = accounts[start : start + batch_teams]
        rated, failed = run.rate(batch)
        skipped.extend(failed)
        gone = {item.team for item in failed}
        issued = view.stored(batch[0].team, batch[-1].team)
        teams = {account.team for account in batch}
        for side, invoices in enumerate((issued, rated)):
            for document in _documents(invoices, first_day, last_day, gone):
                if document.document == "invoice" and document.team in teams:
                    totals.add(document, side)
    rows, per_currency = totals.figures()
    return Rerate(first_day, last_day, as_of, tuple(rows), tuple(per_currency),
                  tuple(sorted(skipped, key=attrgetter("team"))))


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def rerate_json(result: Rerate) -> dict[str, Any]:
    """The answer of `metering rerate --json` and POST /v1/rerate: amounts as decimal text in
    each currency's minor unit, difference = candidate - issued."""
    return {
        "from": result.first_day.isoformat(),
        "to": result.last_day.isoformat(),
        "as_of": _utc(result.as_of),
        "teams": [
            {"team": row.team, "currency": row.currency,
             "issued": format_amount(row.issued, row.currency),
             "candidate": format_amount(row.candidate, row.currency),
             "difference": format_amount(row.difference, row.currency),
             "issued_invoices": row.issued_invoices,
             "candidate_invoices": row.candidate_invoices}
            for row in result.teams
        ],
        "totals": [
            {"currency": total.currency,
             "issued": format_amount(total.issued, total.currency),
             "candidate": format_amount(total.candidate, total.currency),
             "difference": format_amount(total.difference, total.currency)}
            for total in result.totals
        ],
        "skipped": [{"team": item.team, "reason": item.reason} for item in result.skipped],
    }
