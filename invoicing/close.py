"""Period close: issue every invoice that is due and not issued yet, exactly once.

Silver-style billing log: the store's `invoices` table is the log; an invoice already in it is
never rated again, so a second close issues nothing and the log keeps the same bytes.

The close works on teams in byte order, `batch_teams` at a time. For each batch it reads the
log and the usage in a few set queries over the batch's range of teams (issued keys; active
users per period; what earlier invoices billed per period; billing changes), rates each due
invoice with a pure function of those figures, and hands the new invoices of the batch to
`issue`, which must record and publish them before it returns (metering/closing.py: one
insert, one broker flush, under the close lease). Memory holds one batch, never the run.

Plans rated from usage (`rated_from_usage`: "mau", seed 001; "mau_minimum", seed 004) are
rated on each billing date from the store's usage. Late events never rewrite an issued
invoice: each invoice records the active users it billed per period (`usage`), and the next
invoice adds an `adjustment` line for every earlier period whose count has grown since.

Licence, seat and tier plans are billed from their schedule (schedule.py): the account's
billing changes, as stored, replayed from its start. Every schedule is built before anything
is issued, so a history that cannot apply (for example after a catalog edit) stops the close
with one line and issues nothing.

A team that moved plans (`plan_changed`, invoicing/migration.py) is billed segment by
segment, each on its plan as if the team had started on it, and the two invoices of the move's
billing date are one. The batch's billing changes are read in one set query whatever the plans
(a MAU team may have moved); a team whose changes hold no plan_changed, the common case, is
rated as before (MAU teams from `RatedUsage`, whose cache serves a million teams).

`not_invoiced` gives, per team, local-date windows [from, to) (to None: open) in which no
invoice of a billing date is issued (the account lifecycle: paused and archived teams are not
invoiced): such an invoice is neither issued nor counted as due, and it never will be.
Immediate charges are not gated. The usage of a skipped period is never billed: a later
invoice corrects only periods an issued invoice billed. `estimate` derives the team's windows
itself, from the store, as the close's caller does (`read_lifecycle`), so it skips what the
close skips.

An invoice is due at the moment it arises plus grace (a billing date arises at its local
midnight and grace counts on the local clock; a change arises at its effective time): for a
billing date, the moment the worker, too, starts counting an event of the period ending
then as late.

When the catalog has a `tax` table and the account a `billing_address`, the invoice gets one
tax line (`invoice_with_tax`); otherwise its tax is zero and it carries no tax line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from operator import attrgetter
from types import MappingProxyType
from typing import Final, NamedTuple, Protocol

from pydantic_core import to_json

from aggregation import (
    DayKey,
    InvoiceKey,
    PeriodCount,
    StoredChange,
    StoredInvoice,
    StoredPayment,
    day_number,
)
from invoicing.access import read_lifecycle
from invoicing.errors import ChangeError, CloseError
from invoicing.migration import (
    Part,
    has_migration,
    merged_invoice,
    next_billing_date,
    segment_parts,
    segments,
)
from invoicing.rating import (
    Calendars,
    RatedUsage,
    account_billing_dates,
    day_keys,
    due_dates,
    rate_from_counts,
    scheduled_invoice,
    taxed,
    usage_record,
)
from invoicing.schedule import Scheduled, schedule
from schemas import (
    Account,
    BillingChange,
    Catalog,
    Invoice,
    UsageRecord,
)

__all__ = [
    "DEFAULT_BATCH_TEAMS",
    "CloseError",
    "CloseLog",
    "CloseSummary",
    "EstimateLog",
    "NotInvoiced",
    "OnDue",
    "close",
    "due_dates",
    "estimate",
]

# Teams per batch: a few set queries and one write per batch; memory holds one batch.
DEFAULT_BATCH_TEAMS: Final = 10_000
Key = tuple[date, str]  # invoice date, reference
Issue = Callable[[list[StoredInvoice]], None]
# Every due invoice, in key order, and whether this run issued it.
OnDue = Callable[[StoredInvoice, bool], None]
# How far ahead an estimate replays a schedule: past the next renewal of an annual term.
_ESTIMATE_HORIZON: Final = timedelta(days=400)
# Per team, local-date windows [from, to) (to None: open) without invoices of billing dates.
NotInvoiced = Mapping[str, Sequence[tuple[date, date | None]]]
_ALL_INVOICED: Final[NotInvoiced] = MappingProxyType({})
# Every stored plan_changed's body (its JSON) holds this string: a MAU team's changes are
# parsed only when one of them does (a lifecycle change alone leaves the team on the fast path).
_PLAN_CHANGED_JSON: Final = '"plan_changed"'


class CloseLog(Protocol):
    """What the close reads of the store, for the teams from `first` to `last` (byte order)."""

    def issued_keys(self, first: str, last: str) -> dict[str, set[DayKey]]: ...

    def invoices_between(self, first: str, last: str) -> list[StoredInvoice]: ...

    def billed_usage(self, first: str, last: str) -> list[PeriodCount]: ...

    def period_mau(self, first: str, last: str) -> list[PeriodCount]: ...

    def changes_between(self, first: str, last: str) -> list[StoredChange]: ...


class EstimateLog(CloseLog, Protocol):
    """What `estimate` reads: the close's reads, and the team's invoices, payments and changes
    from which its lifecycle is derived (invoicing/access.py `LifecycleLog`)."""

    def invoices(self, team: str) -> list[StoredInvoice]: ...

    def payments(self, team: str) -> list[StoredPayment]: ...

    def changes(self, team: str) -> list[StoredChange]: ...


@dataclass(frozen=True, slots=True)
class CloseSummary:
    teams: int  # teams looked at
    issued: int  # invoices issued by this run
    due: int  # invoices due as of the close, issued by this run or before


def _schedule(catalog: Catalog, account: Account, changes: Sequence[BillingChange],
              until: date) -> list[Scheduled]:
    """The account's schedule from `changes` (those in effect); CloseError if it cannot apply."""
    try:
        return schedule(account, catalog, changes, until=until)
    except ChangeError as exc:
        raise CloseError(str(exc)) from exc


def _in_effect(changes: Sequence[StoredChange], as_of: datetime) -> list[BillingChange]:
    return [change for change in (stored.change() for stored in changes)
            if change.time <= as_of]


def _migrated(catalog: Catalog, account: Account, changes: Sequence[BillingChange],
              until: date) -> dict[Key, list[Part]]:
    """Per key through `until`, the parts of a team that moved plans; CloseError if its
    history cannot apply."""
    try:
        return segment_parts(catalog, segments(account, catalog, changes), until=until)
    except ChangeError as exc:
        raise CloseError(str(exc)) from exc


def _invoiced(key: Key, windows: Sequence[tuple[date, date | None]]) -> bool:
    """Whether the invoice of `key` is issued: not one of a billing date in a window."""
    day, reference = key
    return bool(reference) or not any(start <= day and (end is None or day < end)
                                      for start, end in windows)


def _stored(invoice: Invoice) -> StoredInvoice:
    return StoredInvoice(invoice.team, invoice.invoice_date, invoice.canonical_json(),
                         invoice.reference, invoice.usage)


def _counts_by_team(rows: Sequence[PeriodCount]) -> dict[str, dict[date, int]]:
    grouped: dict[str, dict[date, int]] = {}
    for row in rows:
        grouped.setdefault(row.team, {})[row.period_start] = row.active_users
    return grouped


def _billed_by_team(rows: Sequence[PeriodCount]) -> dict[str, dict[date, UsageRecord]]:
    grouped: dict[str, dict[date, UsageRecord]] = {}
    for row in rows:
        grouped.setdefault(row.team, {})[row.period_start] = usage_record(row)
    return grouped


class _Stored(NamedTuple):
    issued: dict[str, set[DayKey]]  # per team, the keys in the log
    stored: dict[InvoiceKey, StoredInvoice]  # when reporting: the invoices themselves


class _Closed(NamedTuple):
    new: list[StoredInvoice]  # issued now, in key order
    due: int
    due_keys: list[InvoiceKey]  # when reporting: every due key, in key order
    stored: dict[InvoiceKey, StoredInvoice]  # when reporting: what was stored before


class _Plans(NamedTuple):
    scheduled: dict[str, dict[Key, Scheduled]]  # accounts billed from their schedule
    migrated: dict[str, dict[Key, list[Part]]]  # accounts that moved plans


class _Batch:
    """One batch of accounts (consecutive in byte order) and what the store says of them."""

    def __init__(self, store: CloseLog, catalog: Catalog, accounts: Sequence[Account],
                 as_of: datetime, grace: timedelta, rated: RatedUsage, *,
                 not_invoiced: NotInvoiced = _ALL_INVOICED) -> None:
        self.store, self.catalog, self.accounts, self.rated = store, catalog, accounts, rated
        self.calendars = rated.calendars
        self.as_of, self.grace = as_of, grace
        self.not_invoiced = not_invoiced
        self.first, self.last = accounts[0].team, accounts[-1].team
        by_usage = {name: plan.rated_from_usage for name, plan in catalog.plans.items()}
        self.usage_rated = [by_usage[account.plan] for account in accounts]

    def schedules(self) -> _Plans:
        """Per scheduled account, its items due by `as_of`; per account that moved plans, the
        parts of its invoices due by `as_of`. CloseError if a history cannot apply. One read
        of the batch's billing changes."""
        changes: dict[str, list[StoredChange]] = {}
        for change in self.store.changes_between(self.first, self.last):
            changes.setdefault(change.team, []).append(change)
        plans = _Plans({}, {})
        for account, by_usage in zip(self.accounts, self.usage_rated, strict=True):
            stored = changes.get(account.team, ())
            if by_usage and not any(_PLAN_CHANGED_JSON in change.body for change in stored):
                continue
            in_effect = _in_effect(stored, self.as_of)
            local = account.calendar.local_date(self.as_of)
            if has_migration(in_effect):
                parts = _migrated(self.catalog, account, in_effect, local)
                plans.migrated[account.team] = {
                    key: parts[key] for key in sorted(parts)
                    if all(part.arises + self.grace <= self.as_of for part in parts[key])}
            elif not by_usage:
                items = _schedule(self.catalog, account, in_effect, local)
                plans.scheduled[account.team] = {
                    (item.invoice_date, item.reference): item for item in items
                    if item.arises + self.grace <= self.as_of}
        return plans

    def read(self, *, report: bool) -> _Stored:
        """What the log holds for the batch: the issued keys per team; with `report`, the
        stored invoices themselves (bodies too), read instead of the keys."""
        stored: dict[InvoiceKey, StoredInvoice] = {}
        if report:
            stored = {invoice.key: invoice
                      for invoice in self.store.invoices_between(self.first, self.last)}
            issued: dict[str, set[DayKey]] = {}
            for team, day, reference in stored:
                issued.setdefault(team, set()).add((day_number(day), reference))
            return _Stored(issued, stored)
        return _Stored(self.store.issued_keys(self.first, self.last), stored)

    def close(self, log: _Stored, *, report: bool) -> _Closed:
        """The batch's new invoices given what `log` (its `read`) holds, and the count of due
        ones; with `report`, also the keys of the due ones."""
        plans = self.schedules()
        issued = log.issued
        due: list[InvoiceKey] = []
        count = 0
        missing: list[tuple[Account, list[Key]]] = []
        nothing: set[DayKey] = set()
        for account, by_usage in zip(self.accounts, self.usage_rated, strict=True):
            team = account.team
            keys: Sequence[Key]
            if team in plans.migrated:
                keys = tuple(plans.migrated[team])
                days = day_keys(keys)
            elif by_usage:
                keys, days = self.calendars.due(account)
            else:
                keys = tuple(sorted(plans.scheduled[team]))
                days = day_keys(keys)
            windows = self.not_invoiced.get(team)
            if windows:
                kept = [index for index, key in enumerate(keys) if _invoiced(key, windows)]
                keys = [keys[index] for index in kept]
                days = tuple(days[index] for index in kept)
            count += len(keys)
            if report:
                due.extend(InvoiceKey(team, day, reference) for day, reference in keys)
            done = issued.get(team, nothing)
            if not done.issuperset(days):
                missing.append((account, [key for key, day in zip(keys, days, strict=True)
                                          if day not in done]))
        return _Closed(self._rate(missing, plans), count, due, log.stored)

    def _needs_usage(self, missing: Sequence[tuple[Account, list[Key]]], plans: _Plans) -> bool:
        """Whether any missing invoice is rated from usage (the usage reads are skipped
        otherwise)."""
        for account, keys in missing:
            parts = plans.migrated.get(account.team)
            if parts is None:
                if self.catalog.plans[account.plan].rated_from_usage:
                    return True
            elif any(part.item is None for key in keys for part in parts[key]):
                return True
        return False

    def _rate(self, missing: Sequence[tuple[Account, list[Key]]],
              plans: _Plans) -> list[StoredInvoice]:
        counts: dict[str, dict[date, int]] = {}
        billed: dict[str, dict[date, UsageRecord]] = {}
        if self._needs_usage(missing, plans):
            counts = _counts_by_team(self.store.period_mau(self.first, self.last))
            billed = _billed_by_team(self.store.billed_usage(self.first, self.last))
        none: dict[date, int] = {}
        new: list[StoredInvoice] = []
        for account, keys in missing:
            plan = self.catalog.plans[account.plan]
            team_counts = counts.get(account.team, none)
            team_billed = dict(billed.get(account.team, ()))
            parts = plans.migrated.get(account.team)
            if parts is not None:
                for key in keys:
                    merged = merged_invoice(self.catalog, account, key, parts[key],
                                            team_counts, team_billed)
                    team_billed.update((record.period_start, record) for record in merged.usage)
                    new.append(_stored(merged))
                continue
            if not plan.rated_from_usage:
                items = plans.scheduled[account.team]
                new.extend(_stored(taxed(self.catalog, account, scheduled_invoice(
                    account, plan.currency, items[key]))) for key in keys)
                continue
            shape = self.rated.shape(account)
            team_json = to_json(account.team).decode()
            for invoice_date, _ in keys:
                invoice = self.rated.invoice(account, shape, plan, invoice_date, team_counts,
                                             team_billed, team_json=team_json)
                team_billed.update((record.period_start, record) for record in invoice.usage)
                new.append(invoice)
        return new


def _accounts(catalog: Catalog, team: str | None) -> Iterator[Account]:
    if team is None:
        yield from catalog.accounts
        return
    account = catalog.account(team)
    if account is None:
        raise CloseError(f"unknown team {team!r}: not in the catalog")
    yield account


def _batches(accounts: Sequence[Account], size: int) -> Iterator[Sequence[Account]]:
    for start in range(0, len(accounts), size):
        yield accounts[start : start + size]


def close(
    *,
    store: CloseLog,
    catalog: Catalog,
    as_of: datetime,
    grace: timedelta,
    issue: Issue,
    team: str | None = None,
    on_teams: Callable[[int], None] | None = None,
    on_due: OnDue | None = None,
    batch_teams: int = DEFAULT_BATCH_TEAMS,
    not_invoiced: NotInvoiced = _ALL_INVOICED,
) -> CloseSummary:
    """Issue what is due for `team` or every catalog team, batch by batch: `issue` gets each
    batch's new invoices and must record and publish them before it returns; `on_teams` is
    told how many teams each finished batch held (a progress bar counts them); `on_due`, when
    given, gets every due invoice in key order (already issued ones are read for it);
    `not_invoiced` names, per team, the local-date windows [from, to) whose billing dates issue
    no invoice (module doc). Every schedule is built before anything is issued, so a history
    the catalog refuses issues nothing."""
    if as_of.tzinfo is None:
        raise CloseError("as_of must carry a time zone")
    if batch_teams < 1:
        raise ValueError(f"batch_teams must be >= 1, got {batch_teams}")
    # Byte order is code point order for UTF-8, and ClickHouse's order of String.
    accounts = sorted(_accounts(catalog, team), key=attrgetter("team"))
    rated = RatedUsage(catalog, Calendars(as_of, grace))
    batches = [_Batch(store, catalog, part, as_of, grace, rated, not_invoiced=not_invoiced)
               for part in _batches(accounts, batch_teams)]
    # Every history is replayed once before anything is issued, and again batch by batch
    # below: keeping every account's schedule between the two would hold them all at once.
    for batch in batches:
        batch.schedules()
    issued = due = 0
    report = on_due is not None
    # The next batch's log is read while this one is rated, recorded and published: the
    # store works on another core meanwhile (team ranges are disjoint, so no read depends
    # on this batch's writes).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="close-read") as reader:
        ahead = [reader.submit(batch.read, report=report) for batch in batches[:1]]
        for index, batch in enumerate(batches):
            log = ahead.pop().result()
            ahead.extend(reader.submit(later.read, report=report)
                         for later in batches[index + 1 : index + 2])
            closed = batch.close(log, report=report)
            if closed.new:
                issue(closed.new)
            if on_due is not None:
                _report_due(closed, on_due)
            issued += len(closed.new)
            due += closed.due
            if on_teams is not None:
                on_teams(len(batch.accounts))
    return CloseSummary(teams=len(accounts), issued=issued, due=due)


def _report_due(closed: _Closed, on_due: OnDue) -> None:
    fresh = {invoice.key: invoice for invoice in closed.new}
    for key in closed.due_keys:
        if key in fresh:
            on_due(fresh[key], True)
        elif key in closed.stored:
            on_due(closed.stored[key], False)


def estimate(*, store: EstimateLog, catalog: Catalog, team: str, now: datetime
             ) -> Invoice | None:
    """The invoice the team's next billing date would issue if its open period ended `now`:
    usage so far, changes in effect by `now`, and a plan_changed taking effect on that date
    (sent ahead: the date's invoice is the move's). Earlier invoices the close has yet to
    issue (`_still_to_issue`) are rated first, as the close will issue them first: a period
    that grew late is corrected on the first of them, not on the estimate too. So the estimate
    taken at the last instant before the date's local midnight is the invoice the close then
    issues (tests/unit/test_estimate_is_invoice.py).

    The account lifecycle gates both as it gates the close: the team's not-invoiced windows
    are derived from the store as the close's caller derives them (`read_lifecycle`, as of
    the date's local midnight, when the open period ends), and an invoice of a billing date
    inside one is neither priced nor counted as still to issue; so a correction it would have
    carried lands on the next invoice the close issues.

    None when nothing more will be billed (a cancelled subscription) or when the date's
    invoice is not issued (a paused, archived or deleted team). Raises CloseError for an
    unknown team or a history that cannot apply."""
    account = next(_accounts(catalog, team))
    plan = catalog.plans[account.plan]
    calendar = account.calendar
    local = calendar.local_date(now)
    changes = [stored.change() for stored in store.changes_between(team, team)]
    if has_migration(changes):
        return _estimate_migrated(store, catalog, account, changes, now)
    if plan.rated_from_usage:
        following = (account.start_date if local < account.start_date
                     else calendar.next_anchor_date(local))
        windows = _not_invoiced(store, catalog, account, following)
        if not _invoiced((following, ""), windows):
            return None
        counts = {row.period_start: row.active_users for row in store.period_mau(team, team)}
        billed = {row.period_start: usage_record(row) for row in store.billed_usage(team, team)}
        earlier = [(day, "") for day in account_billing_dates(account, following)
                   if day < following]
        for day, _ in _still_to_issue(store, team, earlier, windows):
            pending = rate_from_counts(account, plan, day, counts, billed)
            billed.update((record.period_start, record) for record in pending.usage)
        return taxed(catalog, account, rate_from_counts(account, plan, following, counts, billed))
    in_effect = [change for change in changes if change.time <= now]
    items = _schedule(catalog, account, in_effect, local + _ESTIMATE_HORIZON)
    upcoming = next((item for item in items if not item.reference and item.invoice_date > local),
                    None)
    if upcoming is None:
        return None
    key = (upcoming.invoice_date, upcoming.reference)
    if not _invoiced(key, _not_invoiced(store, catalog, account, upcoming.invoice_date)):
        return None
    return taxed(catalog, account, scheduled_invoice(account, plan.currency, upcoming))


def _estimate_migrated(store: EstimateLog, catalog: Catalog, account: Account,
                       changes: Sequence[BillingChange], now: datetime) -> Invoice | None:
    """`estimate` for a team with a plan_changed in its history: the next billing date of the
    plan it is on now, and that date's invoice from every segment's parts."""
    local = account.calendar.local_date(now)
    try:
        current = segments(account, catalog, [c for c in changes if c.time <= now])[-1]
    except ChangeError as exc:
        raise CloseError(str(exc)) from exc
    following = next_billing_date(current.account, catalog, local)
    cutoff = account.calendar.midnight(following)
    in_effect = [change for change in changes if change.time <= now
                 or (change.type == "plan_changed" and change.time <= cutoff)]
    key = (following, "")
    every = _migrated(catalog, account, in_effect, following)
    parts = every.get(key)
    if not parts:
        return None
    windows = _not_invoiced(store, catalog, account, following)
    if not _invoiced(key, windows):
        return None
    counts = {row.period_start: row.active_users
              for row in store.period_mau(account.team, account.team)}
    billed = {row.period_start: usage_record(row)
              for row in store.billed_usage(account.team, account.team)}
    earlier_keys = sorted(k for k in every if k < key)
    for earlier in _still_to_issue(store, account.team, earlier_keys, windows):
        pending = merged_invoice(catalog, account, earlier, every[earlier], counts, billed)
        billed.update((record.period_start, record) for record in pending.usage)
    return merged_invoice(catalog, account, key, parts, counts, billed)


def _not_invoiced(store: EstimateLog, catalog: Catalog, account: Account, following: date
                  ) -> Sequence[tuple[date, date | None]]:
    """The account's not-invoiced windows as the close that issues `following`'s invoice
    derives them (metering/closing.py: `read_lifecycle` through metering/lifecycle.py
    `derive`), as of `following`'s local midnight: a lifecycle step later than that (the
    close runs grace after it) only reaches billing dates after `following`. CloseError for a
    history that cannot apply."""
    at = account.calendar.midnight(following)
    return read_lifecycle(store, catalog, account, at).not_invoiced


def _still_to_issue(store: CloseLog, team: str, keys: Sequence[Key],
                    windows: Sequence[tuple[date, date | None]]) -> list[Key]:
    """Of `keys` (in key order, all due before the estimated one), those the close will issue
    before it, as the close picks them (`_Batch.close`): not in the log and not inside one of
    the team's not-invoiced `windows` (such an invoice is never issued). The close rates them
    in this order, each billing the usage the next one then corrects."""
    if not keys:
        return []
    issued = store.issued_keys(team, team).get(team, set())
    return [key for key in keys
            if (day_number(key[0]), key[1]) not in issued and _invoiced(key, windows)]
