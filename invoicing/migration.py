"""Plan migration (`plan_changed`, seeds 001, 002 and 004): a team's history as segments, each
on one plan, and the invoice of a billing date made of the segments' parts.

A `plan_changed` change moves a team between a MAU plan (kind mau or mau_minimum) and a seat
or licence plan, either way, or between two plans of those kinds, at local midnight of one of
its billing dates D. Rules:

- D is a billing date of the plan the team is on: an anchor date after the start for a MAU
  plan, the renewal date of the prepaid term for a seat or licence plan (the term ends at D
  and is not renewed). Anything else is refused, naming the next date that would do.
- `data.count` is the seats or licences bought on D (for a seat plan also the members), needed
  by a seat or licence plan and refused by a MAU plan. Tier plans are out of scope (they change
  with change_plan), and so is a move to a plan billed in another currency.
- After D the team bills as if it had started on D on the new plan: the anchor day stays
  (a MAU segment that starts on a month's last day keeps the anchor as `billing_day`), and a
  seat or licence term starts on D, so D must fall on the anchor day itself.
- The invoice of D is one invoice, key (team, D, ""): the new plan's charge in advance (its
  base fee or minimum, or its first prepaid term), then the old MAU plan's arrears (the usage
  of [previous D, D) and its adjustment lines; no base fee for [D, next D)).
- A MAU segment corrects only the periods it billed itself: late usage of a period of the
  old plan that reaches the store after the invoice of D is not billed by the new plan.

Pure: no I/O. A refused history raises ChangeError naming the change and the rule.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Final

from invoicing.errors import BillingRuleError, ChangeError, CountRefused, DateRefused, NotApplicable
from invoicing.lines import untaxed_invoice
from invoicing.rating import account_billing_dates, rate_from_counts, taxed
from invoicing.schedule import Scheduled, schedule
from invoicing.terms import Term
from schemas import (
    LIFECYCLE_TYPES,
    Account,
    BillingChange,
    Catalog,
    Invoice,
    InvoiceLine,
    PrepaidPlan,
    SeatPlan,
    TierPlan,
    UsageRecord,
)

__all__ = [
    "Part",
    "Segment",
    "check_migration",
    "has_migration",
    "merged_invoice",
    "next_billing_date",
    "segment_parts",
    "segments",
]

Key = tuple[date, str]  # invoice date, reference
PLAN_CHANGED: Final = "plan_changed"
# Lines a MAU plan bills in advance for [D, next D): left out of its last invoice.
_ADVANCE_KINDS: Final = frozenset({"base", "minimum"})
_ONE_DAY: Final = timedelta(days=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class Segment:
    """The team on one plan from `start` until the billing date `until` (None: still on it)."""

    account: Account  # as it is on this plan: plan, start_date, units, members
    start: date
    until: date | None
    changes: tuple[BillingChange, ...]  # effective in [start, until); plan_changed left out


@dataclass(frozen=True, slots=True, kw_only=True)
class Part:
    """What one segment puts on one invoice: a scheduled item of a seat or licence segment,
    or (item None) the invoice a MAU segment rates from usage on `invoice_date`."""

    segment: Segment
    invoice_date: date
    arises: datetime  # the billing date's local midnight, or the change's effective time
    item: Scheduled | None = None


def has_migration(changes: Sequence[BillingChange]) -> bool:
    """Whether any of `changes` is a plan_changed."""
    return any(change.type == PLAN_CHANGED for change in changes)


def _billing_dates(account: Account, catalog: Catalog) -> Iterator[date]:
    """The account's billing dates from its start on: anchor dates of a MAU plan, the term
    ends of a prepaid plan (start included either way). Endless; the caller stops."""
    plan = catalog.plans[account.plan]
    if isinstance(plan, PrepaidPlan):
        term = Term.beginning(account.start_date, months=plan.term_months)
        yield term.start
        while True:
            yield term.end
            term = term.following()
    day = account.start_date
    calendar = account.calendar
    while True:
        yield day
        day = calendar.next_anchor_date(day)


def next_billing_date(account: Account, catalog: Catalog, after: date) -> date:
    """The account's first billing date after the local date `after` (its start date when it
    starts later). For a MAU, seat or licence plan."""
    return next(day for day in _billing_dates(account, catalog) if day > after)


def _next_date(account: Account, catalog: Catalog, moment: datetime) -> date:
    """The first billing date after the start whose local midnight is at or after `moment`."""
    midnight = account.calendar.midnight
    return next(day for day in _billing_dates(account, catalog)
                if day > account.start_date and midnight(day) >= moment)


def _moved(account: Account, catalog: Catalog, change: BillingChange) -> Account:
    """The account on the plan `change` moves it to, started on the change's date; raises a
    BillingRuleError when the move is refused."""
    calendar = account.calendar
    day = calendar.local_date(change.time)
    old = catalog.plans[account.plan]
    name = change.data.plan or ""
    new = catalog.plans.get(name)
    if new is None:
        raise NotApplicable(f"unknown plan {name!r}: not in the catalog")
    for plan_name, plan in ((account.plan, old), (name, new)):
        if isinstance(plan, TierPlan):
            raise NotApplicable(f"tier plan {plan_name!r}: plan_changed moves between MAU, seat "
                                "and licence plans; tier plans change with change_plan")
    if name == account.plan:
        raise NotApplicable(f"the team is already on plan {name!r}")
    if new.currency != old.currency:
        raise NotApplicable(f"plan {name!r} bills in {new.currency}, the team's plan "
                            f"{account.plan!r} in {old.currency}")
    count = change.data.count
    if isinstance(new, PrepaidPlan) and count is None:
        raise CountRefused(f"data.count: {new.kind} plan {name!r} needs the {new.unit}s bought")
    if not isinstance(new, PrepaidPlan) and count is not None:
        raise NotApplicable(f"data.count: not used by {new.kind} plan {name!r}")
    following = _next_date(account, catalog, change.time)
    if following != day or calendar.midnight(day) != change.time:
        raise DateRefused(f"plan_changed must take effect on a billing date (next: {following})")
    anchor = account.anchor_day
    if isinstance(new, PrepaidPlan):
        if day.day != anchor:
            on_anchor = next(d for d in _billing_dates(account, catalog)
                             if d > day and d.day == anchor)
            raise DateRefused(f"a {new.unit} term starts on the anchor day {anchor}, and {day} "
                              f"is the month's last day (next on day {anchor}: {on_anchor})")
        return account.model_copy(update={
            "plan": name, "start_date": day, "units": count, "billing_day": None,
            "members": count if isinstance(new, SeatPlan) else None})
    return account.model_copy(update={
        "plan": name, "start_date": day, "units": None, "members": None,
        "billing_day": None if day.day == anchor else anchor})


def _refusal(account: Account, change: BillingChange, message: str) -> ChangeError:
    day = account.calendar.local_date(change.time)
    message = message.removeprefix("Value error, ")
    return ChangeError(f"{account.team}: change {change.reference} ({change.type} on {day}): "
                       f"{message}")


def segments(account: Account, catalog: Catalog,
             changes: Sequence[BillingChange]) -> list[Segment]:
    """The team's plans over time: one segment per plan, the first from the account's start,
    each next from the billing date of a `plan_changed` in `changes` (in effect order). Each
    other change goes to the segment in effect at its time. Raises ChangeError for a
    plan_changed the rules refuse (module doc)."""
    current = account
    moves: list[tuple[datetime, Account]] = []
    for change in changes:
        if change.type != PLAN_CHANGED:
            continue
        try:
            if change.team != account.team:
                raise NotApplicable(f"it is for team {change.team!r}")
            current = _moved(current, catalog, change)
        except BillingRuleError as exc:
            raise _refusal(account, change, str(exc)) from exc
        moves.append((change.time, current))
    owned: list[list[BillingChange]] = [[] for _ in range(len(moves) + 1)]
    for change in changes:
        if change.type != PLAN_CHANGED:
            owned[sum(1 for moment, _ in moves if moment <= change.time)].append(change)
    plans = [account, *(moved for _, moved in moves)]
    return [Segment(account=plan_account, start=plan_account.start_date,
                    until=plans[index + 1].start_date if index + 1 < len(plans) else None,
                    changes=tuple(owned[index]))
            for index, plan_account in enumerate(plans)]


def _replayed(segment: Segment, catalog: Catalog, until: date) -> list[Scheduled]:
    """A seat or licence segment's schedule through `until`, never reaching its end: the term
    ending at `segment.until` is not renewed."""
    if segment.until is not None:
        until = min(until, segment.until - _ONE_DAY)
    return schedule(segment.account, catalog, segment.changes, until=until)


def check_migration(account: Account, catalog: Catalog,
                    changes: Sequence[BillingChange]) -> None:
    """Raise ChangeError when the history `changes` (in effect order) cannot apply: a
    plan_changed the rules refuse, a change its segment's plan refuses (a seat or licence
    segment replays its own changes), or a change other than the lifecycle ones on a MAU
    segment."""
    for segment in segments(account, catalog, changes):
        plan = catalog.plans[segment.account.plan]
        if plan.rated_from_usage:
            billed = [change for change in segment.changes if change.type not in LIFECYCLE_TYPES]
            if billed:
                first = billed[0]
                raise _refusal(account, first, f"team is on {plan.kind} plan "
                               f"{segment.account.plan!r} from {segment.start}, rated from "
                               "usage; billing changes apply to licence, seat and tier plans")
            continue
        last = max((segment.account.calendar.local_date(change.time)
                    for change in segment.changes), default=segment.start)
        _replayed(segment, catalog, max(last, segment.start))


def segment_parts(catalog: Catalog, parts_of: Sequence[Segment], *,
                  until: date) -> dict[Key, list[Part]]:
    """Per invoice key through the local date `until`, the parts the segments put on it, in
    segment order. A MAU segment has a part on each of its billing dates through its `until`
    (the last one bills arrears only); a seat or licence segment has its scheduled items
    before its `until`. Raises ChangeError for a segment's change its plan refuses."""
    parts: dict[Key, list[Part]] = {}
    for segment in parts_of:
        plan = catalog.plans[segment.account.plan]
        if plan.rated_from_usage:
            last = until if segment.until is None else min(until, segment.until)
            midnight = segment.account.calendar.midnight
            for day in account_billing_dates(segment.account, last):
                parts.setdefault((day, ""), []).append(
                    Part(segment=segment, invoice_date=day, arises=midnight(day)))
            continue
        for item in _replayed(segment, catalog, until):
            parts.setdefault((item.invoice_date, item.reference), []).append(
                Part(segment=segment, invoice_date=item.invoice_date, arises=item.arises,
                     item=item))
    return parts


def _segment_billed(segment: Segment,
                    billed: Mapping[date, UsageRecord]) -> dict[date, UsageRecord]:
    """The billed periods that lie in the segment: the only ones it corrects."""
    return {start: record for start, record in billed.items()
            if start >= segment.start
            and (segment.until is None or record.period_end <= segment.until)}


def merged_invoice(catalog: Catalog, account: Account, key: Key, parts: Sequence[Part],
                   counts: Mapping[date, int], billed: Mapping[date, UsageRecord]) -> Invoice:
    """The invoice of `key` for `account` (as the catalog has it), from its parts: the later
    segment's lines first (the new plan's charge in advance), then the earlier's (the old MAU
    plan's arrears, without its advance lines). `counts` are the team's active users per period
    start, `billed` what earlier invoices billed per period start. Taxed, with the account's
    payment terms."""
    invoice_date, reference = key
    lines: list[InvoiceLine] = []
    records: list[UsageRecord] = []
    for part in reversed(parts):
        segment = part.segment
        if part.item is not None:
            lines.extend(part.item.lines)
            continue
        plan = catalog.plans[segment.account.plan]
        rated = rate_from_counts(segment.account, plan, invoice_date, counts,
                                 _segment_billed(segment, billed))
        last = invoice_date == segment.until
        lines.extend(line for line in rated.lines
                     if not (last and line.kind in _ADVANCE_KINDS))
        records.extend(rated.usage)
    currency = catalog.plans[parts[0].segment.account.plan].currency
    invoice = untaxed_invoice(team=account.team, invoice_date=invoice_date, currency=currency,
                              lines=lines, records=records)
    return taxed(catalog, account, invoice.model_copy(update={"reference": reference}))
