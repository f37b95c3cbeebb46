"""The estimate is the invoice (issue 15): for any stored usage and billing history, the
running estimate taken at the end of a period equals, line for line, the invoice the close
then issues for that billing date, because both run the same code (invoicing/close.py).

The moment. D is the team's next billing date and E its local midnight, the instant the open
period ends. The estimate is taken at E - 1 microsecond of elapsed time, the last instant of
the open period (`last_instant`: not 23:59:59.999999 on the local clock, which comes an hour
early where the clocks fall back at midnight). The store keeps times in whole seconds, so
every change effective before E is in effect then and none effective at E or later (a change
at E takes effect on D, after D's invoice). The close then runs as of E + grace (D's invoice
is due) on the same store, and its invoice of (D, "") must be the estimate: the same
canonical JSON (lines with their kinds, descriptions, quantities, unit prices, amounts and
service dates; subtotal, tax, total; usage records; payment terms and due date) and the same
model.

The property runs over MAU, MAU-with-minimum, licence, seat and tier plans, and teams moving
between the first four (plan_changed), with drawn prices, currencies, time zones, start dates
(any anchor day), billing days, tax addresses and payment terms. Usage: active users per
period, some stored on time and some late, after the close of a later billing date, so that
adjustment lines appear. Histories: billing changes the plan takes (units added or reduced,
members added or archived, plan changes, add-ons, cancel, resume, leave, takeovers, plan
moves, deletion requests), drawn freely and kept when the replay accepts them, some at a
local midnight exactly. Closes run after some of the earlier billing dates (plus grace);
others are skipped, so one close may issue several invoices at once. Worked examples per
plan kind follow the property.

The account lifecycle. Every close here runs as `metering close` runs it: with the
not-invoiced windows it derives from the store as of its own moment (metering/lifecycle.py
`derive` over `lifecycle_accounts`, then `not_invoiced`). Payment outcomes are drawn into
the histories (`Pay`): four failed charges of the latest invoice suspend the team, which is
paused 14 days later (archived 90 days after that); a payment of every invoice reactivates
it. Accounts on payment terms are dunned from their unpaid invoices' due dates, tier
subscriptions cancelled with `after_cancel: pause` are paused at their term's end and a
resume reactivates them, and a deletion request ends invoicing. So the property covers teams
paused and resumed (billing dates skipped, the late growth of a billed period corrected on
the next invoice the close issues) and teams paused or deleted now, where the close issues
no invoice of D and the estimate is None.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from aggregation import ActiveUserRow, MemoryStore, StoredChange, StoredInvoice, StoredPayment
from invoicing import ChangeError
from invoicing.close import close, estimate
from invoicing.migration import check_migration, segment_parts, segments
from invoicing.rating import account_billing_dates
from invoicing.schedule import schedule
from metering.lifecycle import derive, lifecycle_accounts, not_invoiced
from schemas import Account, BillingChange, Catalog, Invoice, PaymentEvent
from tests.builders import (
    LICENCE_PLAN,
    POWER_PLAN,
    PREMIUM_PLAN,
    account,
    billing_change,
    rfc3339,
)

D = date.fromisoformat
HOUR = timedelta(hours=1)
# The last instant of the open period, before its end E: times are stored in whole seconds.
JUST_BEFORE = timedelta(microseconds=1)
EXAMPLES = 20  # per plan kind
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
                    suppress_health_check=[HealthCheck.too_slow])

ZONES = ("UTC", "Europe/Amsterdam", "America/New_York", "America/Sao_Paulo", "Asia/Kolkata",
         "Pacific/Auckland", "Pacific/Kiritimati", "Pacific/Pago_Pago", "Australia/Lord_Howe")
CURRENCIES = ("USD", "EUR", "GBP", "JPY", "KRW", "BHD", "KWD")
PRORATIONS = ("exact_days", "months_2dp", "calendar_months")
TAX: dict[str, object] = {"eu_vat": {"NL": "0.21", "DE": "0.19", "IE": "0.23"},
                          "us_sales_tax": {"CA": "0.0725"}, "seller_country": "IE"}
ADDRESSES: tuple[dict[str, object], ...] = (
    {"country": "NL"}, {"country": "DE", "vat_id": "DE123456789", "vat_id_valid": True},
    {"country": "IE", "vat_id": "IE1234567T", "vat_id_valid": True},
    {"country": "US", "region": "CA"}, {"country": "US", "region": "OR"}, {"country": "JP"},
)
PEOPLE = ("ann", "bob", "cy")

_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
teams = st.builds(str.__add__, st.sampled_from(_ALNUM), st.text(_ALNUM + "._-", max_size=15))
prices = st.decimals(min_value=0, max_value=500, places=4, allow_nan=False,
                     allow_infinity=False).map(str)
currencies = st.sampled_from(CURRENCIES)
graces = st.sampled_from((timedelta(0), HOUR, timedelta(hours=26)))


@dataclass(frozen=True, slots=True)
class Users:
    """Active users of one period: `on_time` stored before the close of the billing date that
    ends it, and `late` ones as (step, count): stored after the close of billing date `step`
    (the last step: after every earlier close, before the estimate)."""

    on_time: int
    late: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class Pay:
    """A payment outcome stored after step `step` (the close of billing date `step`, if it
    ran), `after` past that date's local midnight plus grace: `fail`, four failed charges of
    the latest invoice with a total (the team is suspended, then paused), or `pay`, every
    invoice with a total paid in full (the team is reactivated)."""

    step: int
    kind: str  # "fail" or "pay"
    after: timedelta


@dataclass(frozen=True, slots=True)
class Case:
    catalog: Catalog
    team: str
    changes: tuple[BillingChange, ...]  # in effect order, every one accepted by the replay
    dates: tuple[date, ...]  # billing dates through D, the last
    users: tuple[Users, ...]  # per period [dates[i], dates[i + 1]); the last is the open one
    closes: tuple[bool, ...]  # per billing date before D: whether a close ran after it
    grace: timedelta
    payments: tuple[Pay, ...] = ()

    @property
    def account(self) -> Account:
        found = self.catalog.account(self.team)
        assert found is not None
        return found


# --- the property ---------------------------------------------------------------------


def last_instant(end: datetime) -> datetime:
    """The instant just before `end`, in elapsed time: arithmetic on a zoned time counts on
    the local clock, which is an hour off when the clocks fell back at midnight (America/
    Sao_Paulo until 2019: 00:00 on the 18th came an hour after the first 23:59:59 of the
    17th)."""
    return end.astimezone(UTC) - JUST_BEFORE


def _store(changes: Sequence[BillingChange]) -> MemoryStore:
    store = MemoryStore()
    store.ensure_schema()
    store.add_changes([StoredChange.of(change) for change in changes])
    return store


def _users(team: str, period: date, first: int, count: int) -> list[ActiveUserRow]:
    at = datetime.combine(period, time(12), tzinfo=UTC)
    return [ActiveUserRow(team, period, f"u{n}", at, f"{period}-{n}", "timeclock", "clock_in")
            for n in range(first, first + count)]


def close_as_run(store: MemoryStore, cat: Catalog, as_of: datetime, grace: timedelta) -> None:
    """The close as metering/closing.py `run_close` runs it (lease, broker and notices
    aside): the lifecycle derived as of `as_of` keeps paused, archived and deleted teams from
    being invoiced; each batch is recorded before the next."""
    lives = derive(store, cat, lifecycle_accounts(store, cat), as_of)

    def issue(batch: list[StoredInvoice]) -> None:
        store.add_invoices(batch, batch="test")

    close(store=store, catalog=cat, as_of=as_of, grace=grace, issue=issue, batch_teams=2,
          not_invoiced=not_invoiced(lives))


def _outcome(team: str, ident: str, kind: str, at: datetime, invoice: Invoice,
             attempt: int = 1) -> StoredPayment:
    data: dict[str, object] = {
        "invoice": {"invoice_date": invoice.invoice_date.isoformat(),
                    "reference": invoice.reference},
        "attempt": attempt, "amount": invoice.total, "currency": invoice.currency}
    if kind == "payment_failed":
        data["failure"] = "card_declined"
    return StoredPayment.of(PaymentEvent.model_validate({
        "specversion": "1.0", "id": ident, "source": "stripe", "type": kind,
        "time": rfc3339(at), "subject": team, "data": data}))


def store_payment(store: MemoryStore, team: str, kind: str, at: datetime, ident: str) -> None:
    """`fail`: four failed charges at `at` of the team's latest invoice with a total; `pay`:
    every invoice with a total paid in full at `at`."""
    billed = sorted((invoice for invoice in _issued(store, team).values()
                     if invoice.document == "invoice" and Decimal(invoice.total) > 0),
                    key=lambda invoice: (invoice.invoice_date, invoice.reference))
    if not billed:
        return
    if kind == "fail":
        store.add_payments([_outcome(team, f"{ident}-{n}", "payment_failed", at, billed[-1], n)
                            for n in range(1, 5)])
    else:
        store.add_payments([_outcome(team, f"{ident}-{n}", "payment_succeeded", at, invoice)
                            for n, invoice in enumerate(billed)])


def _issued(store: MemoryStore, team: str) -> dict[tuple[date, str], Invoice]:
    return {(stored.invoice_date, stored.reference): Invoice.model_validate_json(stored.body)
            for stored in store.invoices(team)}


def estimate_and_invoice(case: Case) -> tuple[Invoice | None, Invoice | None]:
    """Store the case's history as it would arrive (closes of earlier billing dates between
    the usage stored on time and the late usage), take the estimate at E - 1 us, close as of
    E + grace, and return the estimate and the close's invoice of D."""
    account, team = case.account, case.team
    calendar = account.calendar
    store = _store(case.changes)
    *earlier, day = case.dates
    end = calendar.midnight(day)
    stored = [0] * len(case.users)  # users stored so far per period

    def add(period: int, count: int) -> None:
        store.add_active_users(_users(team, case.dates[period], stored[period], count))
        stored[period] += count

    def arrive_late(step: int) -> None:
        for period, users in enumerate(case.users):
            for when, count in users.late:
                if when == step:
                    add(period, count)

    for step, billing_date in enumerate(earlier):
        if 0 < step <= len(case.users):
            add(step - 1, case.users[step - 1].on_time)
        if case.closes[step]:
            as_of = min(calendar.midnight(billing_date) + case.grace, last_instant(end))
            close_as_run(store, case.catalog, as_of, case.grace)
        for index, pay in enumerate(case.payments):
            if pay.step == step:
                at = calendar.midnight(billing_date) + case.grace + pay.after
                store_payment(store, team, pay.kind, min(at, end - timedelta(seconds=1)),
                              f"p{index}")
        arrive_late(step)
    if case.users:
        add(len(case.users) - 1, case.users[-1].on_time)
    arrive_late(len(earlier))
    estimated = estimate(store=store, catalog=case.catalog, team=team, now=last_instant(end))
    # The windows the close below derives (before it issues anything).
    windows = derive(store, case.catalog, [account], end + case.grace)[team].not_invoiced
    if any(start < day and until is not None for start, until in windows):
        event("not invoiced for a while, then resumed")
    if any(start <= day and until is None for start, until in windows):
        event("not invoiced on D (paused, archived or deleted)")
    close_as_run(store, case.catalog, end + case.grace, case.grace)
    return estimated, _issued(store, team).get((day, ""))


def assert_estimate_is_invoice(case: Case) -> Invoice | None:
    """The estimate is the close's invoice of D, or None where the close issues none (the
    team is paused, archived or deleted on D; a subscription that ended)."""
    estimated, issued = estimate_and_invoice(case)
    if issued is None:
        assert estimated is None, (f"the close issued no invoice of {case.dates[-1]}, but "
                                   f"the estimate is {estimated.canonical_json()}")
        event("no invoice of D")
        return None
    assert estimated is not None, f"no estimate, but the close issued {issued.canonical_json()}"
    assert estimated.canonical_json() == issued.canonical_json()
    assert estimated == issued
    event("an invoice of D")
    return issued


# --- strategies -----------------------------------------------------------------------


@st.composite
def _account_fields(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, object] | None]:
    """Fields any account may carry: zone, payment terms, a taxed address (and the tax table
    it needs)."""
    fields: dict[str, Any] = {"timezone": draw(st.sampled_from(ZONES))}
    if draw(st.booleans()):
        fields["payment_terms"] = draw(st.sampled_from(("NET 15", "NET 30")))
    tax = None
    if draw(st.booleans()):
        tax = TAX
        fields["billing_address"] = draw(st.sampled_from(ADDRESSES))
    return fields, tax


def catalog(acct: dict[str, object], plans: dict[str, dict[str, object]],
            tax: dict[str, object] | None) -> Catalog:
    """tests/builders.py `catalog` without the trip through YAML (the same Catalog)."""
    body: dict[str, object] = {"plans": plans, "accounts": [acct]}
    if tax is not None:
        body["tax"] = tax
    return Catalog.model_validate(body)


starts = st.dates(min_value=date(2017, 1, 1), max_value=date(2027, 12, 31))


def _moment(day: date, zone: str, clock: time) -> str:
    """The wire time of `clock` on local `day` in `zone`."""
    return rfc3339(datetime.combine(day, clock, tzinfo=ZoneInfo(zone)).astimezone(UTC))


# Local times of day in whole seconds: midnight often; either reading of an hour the clocks
# repeat (fold).
clocks = st.one_of(st.just(time(0)), st.builds(lambda t, fold: t.replace(microsecond=0, fold=fold),
                                               st.times(), st.integers(0, 1)))


def _accepted(acct: Account, cat: Catalog, candidates: Sequence[BillingChange]
              ) -> tuple[BillingChange, ...]:
    """The candidates, in effect order, that the replay accepts one after the other."""
    kept: list[BillingChange] = []
    for change in sorted(candidates, key=lambda c: (c.time, c.source, c.id)):
        try:
            schedule(acct, cat, [*kept, change], until=acct.calendar.local_date(change.time))
        except ChangeError:
            continue
        kept.append(change)
    return tuple(kept)


@st.composite
def _history(draw: st.DrawFn, team: str, acct_fields: dict[str, Any], start: date,
             horizon: int, kinds: st.SearchStrategy[tuple[str, dict[str, Any]]]
             ) -> list[BillingChange]:
    """Candidate changes on local days [start, start + horizon], in time order (their ids
    too)."""
    drawn = draw(st.lists(st.tuples(st.integers(0, horizon), clocks, kinds), max_size=12))
    timed = sorted(((_moment(start + timedelta(days=offset), acct_fields["timezone"], clock),
                     kind, data) for offset, clock, (kind, data) in drawn),
                   key=lambda timed: timed[0])
    return [billing_change(team, f"c{index:02d}", at, kind, **data)
            for index, (at, kind, data) in enumerate(timed)]


def _closes(draw: st.DrawFn, count: int) -> tuple[bool, ...]:
    return tuple(draw(st.lists(st.booleans(), min_size=count, max_size=count)))


def _payments(draw: st.DrawFn, count: int) -> tuple[Pay, ...]:
    """Payment outcomes after some of the `count` billing dates before D (a failure, a
    payment or nothing after each), so that teams are paused, some for good and some until
    they pay."""
    kinds = st.sampled_from((None, "fail", "pay", "pay"))
    after = st.integers(0, 27 * 24).map(lambda hours: timedelta(hours=hours))
    drawn = draw(st.lists(st.tuples(kinds, after), min_size=count, max_size=count))
    return tuple(Pay(step, kind, wait) for step, (kind, wait) in enumerate(drawn)
                 if kind is not None)


@st.composite
def _usage(draw: st.DrawFn, periods: int) -> tuple[Users, ...]:
    """Users per period; late ones for period i arrive at a step after its billing date."""
    users = []
    for period in range(periods):
        late_steps = st.integers(period + 1, periods)
        late = draw(st.lists(st.tuples(late_steps, st.integers(1, 12)), max_size=2))
        users.append(Users(draw(st.integers(0, 40)), tuple(late)))
    return tuple(users)


@st.composite
def usage_cases(draw: st.DrawFn, kind: str) -> Case:
    """A MAU or MAU-with-minimum account, its usage over up to 6 periods and maybe a deletion
    request (a lifecycle change, not billed)."""
    currency = draw(currencies)
    if kind == "mau":
        plan: dict[str, object] = {"kind": "mau", "name": "Power plan", "currency": currency,
                                   "base_fee": draw(prices),
                                   "included_users": draw(st.integers(0, 12)),
                                   "overage_price": draw(prices)}
    else:
        plan = {"kind": "mau_minimum", "name": "Attendance Pro", "currency": currency,
                "unit_price": draw(prices), "minimum_users": draw(st.integers(0, 12))}
    team, start = draw(teams), draw(starts)
    fields, tax = draw(_account_fields())
    cat = catalog(account(team, str(start), plan="p", **fields), {"p": plan}, tax)
    acct = cat.account(team)
    assert acct is not None
    dates = account_billing_dates(acct, start + timedelta(days=200))
    count = draw(st.integers(1, 7))
    kinds = st.just(("delete_requested", {"by": "ann"}))
    changes = draw(_history(team, fields, start, 31 * count, kinds))
    return Case(cat, team, _accepted(acct, cat, changes), tuple(dates[:count]),
                draw(_usage(count - 1)), _closes(draw, count - 1), draw(graces),
                _payments(draw, count - 1))


def _scheduled_case(draw: st.DrawFn, cat: Catalog, team: str, fields: dict[str, Any],
                    start: date, horizon: int,
                    kinds: st.SearchStrategy[tuple[str, dict[str, Any]]]) -> Case:
    """A case for a plan billed from its schedule: D one of the billing dates the whole
    accepted history makes through the horizon."""
    acct = cat.account(team)
    assert acct is not None
    changes = _accepted(acct, cat, draw(_history(team, fields, start, horizon, kinds)))
    items = schedule(acct, cat, changes, until=start + timedelta(days=horizon))
    dates = sorted({item.invoice_date for item in items if not item.reference})
    # Half the time D is the first billing date after the last change: every change counts.
    last = acct.calendar.local_date(changes[-1].time) if changes else start
    after = next((index + 1 for index, day in enumerate(dates) if day > last), len(dates))
    count = draw(st.one_of(st.just(after), st.integers(1, len(dates))))
    return Case(cat, team, changes, tuple(dates[:count]), (), _closes(draw, count - 1),
                draw(graces), _payments(draw, count - 1))


def _prepaid_kinds(seats: bool) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    counts = st.integers(1, 20)
    both = [st.tuples(st.just("add_units"), st.fixed_dictionaries({"count": counts}))]
    if seats:
        return st.one_of(*both, st.just(("delete_requested", {"by": "ann"})),
                         st.tuples(st.just("member_added"),
                                   st.fixed_dictionaries({"count": st.integers(1, 6)})),
                         st.tuples(st.just("member_archived"),
                                   st.fixed_dictionaries({"count": st.integers(1, 4)})))
    return st.one_of(*both, st.tuples(st.just("reduce_units"),
                                      st.fixed_dictionaries({"count": st.integers(0, 60)})),
                     st.just(("delete_requested", {"by": "ann"})))


@st.composite
def prepaid_cases(draw: st.DrawFn, kind: str) -> Case:
    """A licence or seat account, monthly or annual, and its unit and member changes."""
    billing = draw(st.sampled_from(("monthly", "annual")))
    plan: dict[str, object] = {"kind": kind, "name": "Premium" if kind == "seat" else "Licences",
                               "currency": draw(currencies), "monthly_price": draw(prices),
                               "billing": billing, "proration": draw(st.sampled_from(PRORATIONS))}
    team, start = draw(teams), draw(starts)
    fields, tax = draw(_account_fields())
    units = draw(st.integers(1 if kind == "seat" else 0, 50))
    fields["units"] = units
    if kind == "seat":
        fields["members"] = draw(st.integers(1, units))
    cat = catalog(account(team, str(start), plan="p", **fields), {"p": plan}, tax)
    horizon = 240 if billing == "monthly" else 800
    return _scheduled_case(draw, cat, team, fields, start, horizon,
                           _prepaid_kinds(kind == "seat"))


TIER_NAMES = ("small", "medium", "large")


@st.composite
def _tier_plans(draw: st.DrawFn) -> dict[str, dict[str, object]]:
    """Three tiers in one currency, dearer in that order, with limits and add-ons."""
    currency = draw(currencies)
    monthly = sorted(draw(st.lists(st.integers(1, 50_000), min_size=3, max_size=3,
                                   unique=True)))
    plans: dict[str, dict[str, object]] = {}
    for name, cents, users in zip(TIER_NAMES, monthly, (2, 10, 50), strict=True):
        plans[name] = {
            "kind": "tier", "name": name.title(), "currency": currency,
            "monthly_price": f"{cents // 100}.{cents % 100:02d}",
            "annual_discount": draw(st.sampled_from(("0", "0.15", "0.2"))),
            "limits": {"users": users},
            "addons": {"seats": {"monthly_price": draw(prices), "capacity": {"users": 5}},
                       "support": {"monthly_price": draw(prices)}},
            "proration": draw(st.sampled_from(PRORATIONS)),
            "plan_changes": draw(st.sampled_from(("prorate_next_invoice",
                                                  "charge_difference_now"))),
            "after_cancel": draw(st.sampled_from(("free", "pause"))),
        }
    return plans


_people = st.sampled_from(("ann", *PEOPLE))  # the owner (ann) most often
_others = st.sampled_from(PEOPLE[1:])
_tiers = st.sampled_from(TIER_NAMES)
_plan_change = st.tuples(st.just("change_plan"), st.fixed_dictionaries(
    {"plan": _tiers, "by": _people},
    optional={"usage": st.fixed_dictionaries({"users": st.integers(0, 20)})}))
_addon = st.tuples(st.sampled_from(("add_addon", "add_addon", "remove_addon")),
                   st.fixed_dictionaries({"addon": st.sampled_from(("seats", "support")),
                                          "by": _people, "count": st.integers(1, 3)}))
# Weighted towards the changes that keep a subscription running (plan changes, add-ons).
TIER_KINDS: st.SearchStrategy[tuple[str, dict[str, Any]]] = st.one_of(
    _plan_change, _plan_change, _addon, _addon,
    st.tuples(st.sampled_from(("cancel", "resume", "leave")),
              st.fixed_dictionaries({"by": _people})),
    st.tuples(st.just("take_over"), st.fixed_dictionaries({"plan": _tiers, "by": _others})),
)


@st.composite
def tier_cases(draw: st.DrawFn) -> Case:
    """A tier subscription (monthly or annual, maybe with a billing day) and its changes."""
    plans = draw(_tier_plans())
    team, start = draw(teams), draw(starts)
    fields, tax = draw(_account_fields())
    fields["owner"] = "ann"
    billing = draw(st.sampled_from(("monthly", "annual")))
    fields["billing"] = billing
    day = draw(st.one_of(st.none(), st.integers(1, 31)))
    if day is not None and day != start.day:
        fields["billing_day"] = day
    cat = catalog(account(team, str(start), plan=draw(_tiers), **fields), plans, tax)
    horizon = 150 if billing == "monthly" else 500
    return _scheduled_case(draw, cat, team, fields, start, horizon, TIER_KINDS)


def _accepted_moves(acct: Account, cat: Catalog, candidates: Sequence[BillingChange]
                    ) -> tuple[BillingChange, ...]:
    """`_accepted` for a history with plan moves: each segment's plan judges its changes."""
    kept: list[BillingChange] = []
    for change in sorted(candidates, key=lambda c: (c.time, c.source, c.id)):
        try:
            check_migration(acct, cat, [*kept, change])
        except ChangeError:
            continue
        kept.append(change)
    return tuple(kept)


@st.composite
def migrated_cases(draw: st.DrawFn) -> Case:
    """A team that moves between MAU, MAU-minimum, seat and licence plans (plan_changed at the
    local midnight of a billing date, some sent ahead), with its usage and unit changes."""
    currency = draw(currencies)
    prepaid: dict[str, object] = {"kind": "seat", "name": "Premium", "currency": currency,
                                  "monthly_price": draw(prices),
                                  "billing": draw(st.sampled_from(("monthly", "annual"))),
                                  "proration": draw(st.sampled_from(PRORATIONS))}
    plans: dict[str, dict[str, object]] = {
        "power": {"kind": "mau", "name": "Power plan", "currency": currency,
                  "base_fee": draw(prices), "included_users": draw(st.integers(0, 12)),
                  "overage_price": draw(prices)},
        "attendance": {"kind": "mau_minimum", "name": "Attendance Pro", "currency": currency,
                       "unit_price": draw(prices), "minimum_users": draw(st.integers(0, 12))},
        "seats": prepaid,
        "licences": {**prepaid, "kind": "licence", "name": "Licences"},
    }
    team, start = draw(teams), draw(starts)
    fields, tax = draw(_account_fields())
    first = draw(st.sampled_from(sorted(plans)))
    if first in ("seats", "licences"):
        fields["units"] = draw(st.integers(1, 30))
    if first == "seats":
        fields["members"] = draw(st.integers(1, fields["units"]))
    cat = catalog(account(team, str(start), plan=first, **fields), plans, tax)
    acct = cat.account(team)
    assert acct is not None
    calendar = acct.calendar
    anchors = account_billing_dates(acct, start + timedelta(days=430))[1:]
    moves = draw(st.lists(st.tuples(st.sampled_from(anchors), st.sampled_from(sorted(plans)),
                                    st.integers(1, 30)), min_size=1, max_size=3))
    candidates = []
    for index, (day, plan, count) in enumerate(moves):
        data: dict[str, Any] = {"plan": plan}
        if plans[plan]["kind"] in ("seat", "licence"):
            data["count"] = count
        candidates.append(billing_change(team, f"m{index}", rfc3339(calendar.midnight(day)),
                                         "plan_changed", **data))
    candidates += draw(_history(team, fields, start, 430, _prepaid_kinds(first == "seats")))
    changes = _accepted_moves(acct, cat, candidates)
    keys = segment_parts(cat, segments(acct, cat, changes), until=start + timedelta(days=430))
    dates = sorted(day for day, reference in keys if not reference)
    moved = [dates.index(day) + 1 for day in (calendar.local_date(change.time)
                                              for change in changes
                                              if change.type == "plan_changed")]
    count = draw(st.one_of(st.integers(1, len(dates)), *map(st.just, moved)))
    return Case(cat, team, changes, tuple(dates[:count]), draw(_usage(count - 1)),
                _closes(draw, count - 1), draw(graces), _payments(draw, count - 1))


@SETTINGS
@given(usage_cases("mau"))
def test_the_estimate_is_the_mau_invoice(case: Case) -> None:
    assert_estimate_is_invoice(case)


@SETTINGS
@given(usage_cases("mau_minimum"))
def test_the_estimate_is_the_minimum_invoice(case: Case) -> None:
    assert_estimate_is_invoice(case)


@SETTINGS
@given(prepaid_cases("licence"))
def test_the_estimate_is_the_licence_invoice(case: Case) -> None:
    assert_estimate_is_invoice(case)


@SETTINGS
@given(prepaid_cases("seat"))
def test_the_estimate_is_the_seat_invoice(case: Case) -> None:
    assert_estimate_is_invoice(case)


@SETTINGS
@given(tier_cases())
def test_the_estimate_is_the_tier_invoice(case: Case) -> None:
    assert_estimate_is_invoice(case)


@SETTINGS
@given(migrated_cases())
def test_the_estimate_is_the_invoice_of_a_team_that_moved_plans(case: Case) -> None:
    assert_estimate_is_invoice(case)


# --- worked examples: each fails if the estimate and the close part ways ------------------

POWER: dict[str, dict[str, object]] = {"power": POWER_PLAN}
SMALL: dict[str, object] = {"kind": "tier", "name": "Small", "currency": "USD",
                            "monthly_price": "10"}
TIERS: dict[str, dict[str, object]] = {
    "small": SMALL, "medium": {**SMALL, "name": "Medium", "monthly_price": "20"}}


def _at_the_end(store: MemoryStore, cat: Catalog, team: str, day: str
                ) -> tuple[Invoice | None, dict[tuple[date, str], Invoice]]:
    """The estimate at the last instant before `day`'s local midnight, then every invoice of
    the team once the close has run as of that midnight plus an hour."""
    acct = cat.account(team)
    assert acct is not None
    end = acct.calendar.midnight(D(day))
    estimated = estimate(store=store, catalog=cat, team=team, now=last_instant(end))
    close_as_run(store, cat, end + HOUR, HOUR)
    return estimated, _issued(store, team)


def _same(estimated: Invoice | None, issued: Invoice) -> list[tuple[str, str, str]]:
    """Assert the estimate is the invoice; its lines as (kind, quantity, amount)."""
    assert estimated is not None
    assert estimated.canonical_json() == issued.canonical_json()
    return [(line.kind, line.quantity, line.amount) for line in issued.lines]


def _power_store() -> tuple[MemoryStore, Catalog]:
    """Seed 001's team-acme: 33 users in July, invoiced on 4 August; then 4 more July users
    reported late and 12 users in August."""
    cat = catalog(account("team-acme", "2026-07-04"), POWER, None)
    store = _store(())
    store.add_active_users(_users("team-acme", D("2026-07-04"), 0, 33))
    close_as_run(store, cat, datetime(2026, 8, 4, 1, tzinfo=UTC), HOUR)
    store.add_active_users(_users("team-acme", D("2026-07-04"), 33, 4))
    store.add_active_users(_users("team-acme", D("2026-08-04"), 0, 12))
    return store, cat


def test_mau_the_estimate_carries_the_late_users_adjustment_the_invoice_carries() -> None:
    store, cat = _power_store()
    estimated, issued = _at_the_end(store, cat, "team-acme", "2026-09-04")
    assert _same(estimated, issued[(D("2026-09-04"), "")]) == [
        ("base", "1", "10.00"), ("overage", "7", "14.00"), ("adjustment", "4", "8.00")]


def test_mau_a_late_period_is_corrected_by_the_invoice_still_to_issue_not_the_estimate() -> None:
    # The close of 4 September did not run: the one of 4 October issues that invoice first,
    # and it corrects July; the estimate of 4 October must not correct July again.
    store, cat = _power_store()
    store.add_active_users(_users("team-acme", D("2026-09-04"), 0, 6))
    estimated, issued = _at_the_end(store, cat, "team-acme", "2026-10-04")
    assert [line.kind for line in issued[(D("2026-09-04"), "")].lines] == [
        "base", "overage", "adjustment"]
    assert _same(estimated, issued[(D("2026-10-04"), "")]) == [
        ("base", "1", "10.00"), ("overage", "1", "2.00")]


def test_mau_minimum_with_terms_the_estimate_is_the_invoice() -> None:
    # Seed 004's Daniel in Kolkata: 3 x $2 for August in advance, 30 x $2 above the minimum
    # for July's 33 users; NET 30 from 4 August.
    plan = {"kind": "mau_minimum", "name": "Attendance Pro", "currency": "USD",
            "unit_price": "2.00", "minimum_users": 3}
    cat = catalog(account("daniel", "2026-07-04", plan="attendance", timezone="Asia/Kolkata",
                          payment_terms="NET 30"), {"attendance": plan}, None)
    store = _store(())
    store.add_active_users(_users("daniel", D("2026-07-04"), 0, 33))
    estimated, issued = _at_the_end(store, cat, "daniel", "2026-08-04")
    invoice = issued[(D("2026-08-04"), "")]
    assert _same(estimated, invoice) == [("minimum", "3", "6.00"), ("overage", "30", "60.00")]
    assert invoice.due_date == D("2026-09-03")


def test_licences_a_reduction_at_the_renewal_s_midnight_waits_for_the_next_renewal() -> None:
    # Seed 004: 45 licences on 4 July 2018, 20 added on 18 January 2019; the renewal bills
    # 65 x $18 = $1170. A reduction effective at the renewal's midnight exactly takes effect
    # after that renewal: not in the estimate, not on the invoice.
    cat = catalog(account("daniel", "2018-07-04", plan="licences", units=45),
                  {"licences": LICENCE_PLAN}, None)
    store = _store((
        billing_change("daniel", "c1", "2019-01-18T10:00:00Z", "add_units", count=20),
        billing_change("daniel", "c2", "2019-07-04T00:00:00Z", "reduce_units", count=50)))
    estimated, issued = _at_the_end(store, cat, "daniel", "2019-07-04")
    assert _same(estimated, issued[(D("2019-07-04"), "")]) == [("seats", "65", "1170.00")]
    assert (D("2019-01-18"), "crm/c1") in issued


def test_seats_with_tax_the_renewal_estimate_is_the_invoice() -> None:
    # Seed 002's Premium annual: 50 seats and 40 members on 1 June 2023, 10 seats added, 15
    # members archived; the renewal resets to the 25 members: 25 x 2.49 x 12 = 747.00, with
    # Dutch VAT.
    cat = catalog(account("acme", "2023-06-01", plan="premium", units=50, members=40,
                          timezone="Europe/Amsterdam", billing_address={"country": "NL"}),
                  {"premium": PREMIUM_PLAN}, TAX)
    store = _store((
        billing_change("acme", "c1", "2023-12-01T09:00:00Z", "add_units", count=10),
        billing_change("acme", "c2", "2024-03-10T12:00:00Z", "member_archived", count=15)))
    estimated, issued = _at_the_end(store, cat, "acme", "2024-06-01")
    assert _same(estimated, issued[(D("2024-06-01"), "")]) == [
        ("seats", "25", "747.00"), ("tax", "747.00", "156.87")]


def test_tiers_an_upgrade_s_proration_and_credit_are_on_the_estimate() -> None:
    # Seed 003: Small to Medium on 16 March (16 of 31 days left): the 1 April invoice bills
    # Medium for April, Medium for the rest of March (20 x 16/31 = 10.32) and credits Small
    # (10 x 16/31 = 5.16).
    cat = catalog(account("org", "2025-03-01", plan="small", owner="ann",
                          timezone="Europe/Amsterdam"), TIERS, None)
    store = _store((billing_change("org", "c1", "2025-03-16T09:00:00Z", "change_plan",
                                   plan="medium", by="ann"),))
    estimated, issued = _at_the_end(store, cat, "org", "2025-04-01")
    assert _same(estimated, issued[(D("2025-04-01"), "")]) == [
        ("base", "1", "20.00"), ("proration", "1", "10.32"), ("credit", "1", "-5.16")]


def test_tiers_a_cancelled_subscription_has_no_estimate_and_no_invoice() -> None:
    cat = catalog(account("org", "2025-03-01", plan="small", owner="ann"), TIERS, None)
    store = _store((billing_change("org", "c1", "2025-03-20T09:00:00Z", "cancel", by="ann"),))
    estimated, issued = _at_the_end(store, cat, "org", "2025-04-01")
    assert estimated is None
    assert sorted(issued) == [(D("2025-03-01"), "")]


def test_a_move_s_switch_invoice_leaves_a_late_period_to_the_invoice_still_to_issue() -> None:
    # Power plan from 4 June, seats (41 at $2.49 a month) from 4 September, sent ahead. June
    # grew late after its invoice; the close of 4 August did not run, so the close of
    # 4 September issues that invoice first and it corrects June: the switch invoice, and so
    # its estimate, bills the seats and August's arrears only.
    seats: dict[str, object] = {"kind": "seat", "name": "Premium", "currency": "USD",
                                "monthly_price": "2.49", "billing": "monthly",
                                "proration": "calendar_months"}
    cat = catalog(account("daniel", "2026-06-04"), {**POWER, "premium": seats}, None)
    store = _store((billing_change("daniel", "m1", "2026-09-04T00:00:00Z", "plan_changed",
                                   plan="premium", count=41),))
    store.add_active_users(_users("daniel", D("2026-06-04"), 0, 20))
    close_as_run(store, cat, datetime(2026, 7, 4, 1, tzinfo=UTC), HOUR)
    store.add_active_users(_users("daniel", D("2026-06-04"), 20, 3))
    store.add_active_users(_users("daniel", D("2026-07-04"), 0, 33))
    store.add_active_users(_users("daniel", D("2026-08-04"), 0, 10))
    estimated, issued = _at_the_end(store, cat, "daniel", "2026-09-04")
    assert [line.kind for line in issued[(D("2026-08-04"), "")].lines] == [
        "base", "overage", "adjustment"]
    assert _same(estimated, issued[(D("2026-09-04"), "")]) == [
        ("seats", "41", "102.09"), ("overage", "5", "10.00")]


def test_licences_a_change_in_the_hour_the_clocks_repeat_before_midnight_is_on_both() -> None:
    # Sao Paulo left summer time at 00:00 on 18 February 2018 (-02), back to 23:00 on the
    # 17th (-03): 02:30Z is 23:30 on the 17th the second time, before the renewal's midnight
    # (03:00Z). The reduction it carries is on the estimate and on the renewal: 10 licences.
    plan = {**LICENCE_PLAN, "monthly_price": "1.00"}
    cat = catalog(account("sp", "2017-02-18", plan="licences", units=45,
                          timezone="America/Sao_Paulo"), {"licences": plan}, None)
    store = _store((billing_change("sp", "c1", "2018-02-18T02:30:00Z", "reduce_units",
                                   count=10),))
    estimated, issued = _at_the_end(store, cat, "sp", "2018-02-18")
    assert _same(estimated, issued[(D("2018-02-18"), "")]) == [("seats", "10", "120.00")]


def _paused_in_august() -> tuple[MemoryStore, Catalog]:
    """Seed 001's team-acme (`_power_store`), whose card fails four times on 5 August for the
    4 August invoice: it is suspended, then paused on 19 August at 10:00 (not invoiced from
    20 August), so the close of 4 September issues nothing; July then grows late by 3 more
    users, August (never billed: its invoice was skipped) by 5, and September has 31."""
    store, cat = _power_store()
    store_payment(store, "team-acme", "fail", datetime(2026, 8, 5, 10, tzinfo=UTC), "f")
    close_as_run(store, cat, datetime(2026, 9, 4, 1, tzinfo=UTC), HOUR)
    assert sorted(_issued(store, "team-acme")) == [(D("2026-07-04"), ""), (D("2026-08-04"), "")]
    store.add_active_users(_users("team-acme", D("2026-07-04"), 37, 3))
    store.add_active_users(_users("team-acme", D("2026-08-04"), 12, 5))
    store.add_active_users(_users("team-acme", D("2026-09-04"), 0, 31))
    return store, cat


def test_mau_paused_then_resumed_the_late_correction_is_on_the_next_issued_invoice() -> None:
    # The August invoice is paid on 20 September: active again, not invoiced 20 August to
    # 20 September. The invoice of 4 September is never issued, so the 7 July users billed
    # late (4 before the pause, 3 after) are corrected on 4 October's invoice, and so on its
    # estimate; August's usage is never billed.
    store, cat = _paused_in_august()
    store_payment(store, "team-acme", "pay", datetime(2026, 9, 20, 9, tzinfo=UTC), "p")
    estimated, issued = _at_the_end(store, cat, "team-acme", "2026-10-04")
    assert sorted(issued) == [(D(day), "") for day in ("2026-07-04", "2026-08-04", "2026-10-04")]
    assert _same(estimated, issued[(D("2026-10-04"), "")]) == [
        ("base", "1", "10.00"), ("overage", "26", "52.00"), ("adjustment", "7", "14.00")]


def test_mau_paused_now_has_no_estimate_and_no_invoice() -> None:
    # Still paused on 4 October: the close issues nothing, and the estimate prices neither
    # that date nor the skipped 4 September.
    store, cat = _paused_in_august()
    estimated, issued = _at_the_end(store, cat, "team-acme", "2026-10-04")
    assert estimated is None
    assert sorted(issued) == [(D("2026-07-04"), ""), (D("2026-08-04"), "")]


def test_terms_unpaid_then_paid_the_estimate_skips_what_the_pause_skipped() -> None:
    # Daniel on NET 30 leaves the 4 July invoice (due 3 August) unpaid: dunned from
    # 4 August, suspended on 11 August, paused on 25 August (Kolkata). The closes of
    # 4 September and 4 October skip those dates; he pays on 10 October (active from
    # 11 October), and 4 November's invoice bills November's minimum, October's 40 users and
    # July's 2 late ones, the estimate too.
    plan = {"kind": "mau_minimum", "name": "Attendance Pro", "currency": "USD",
            "unit_price": "2.00", "minimum_users": 3}
    cat = catalog(account("daniel", "2026-07-04", plan="attendance", timezone="Asia/Kolkata",
                          payment_terms="NET 30"), {"attendance": plan}, None)
    store = _store(())
    store.add_active_users(_users("daniel", D("2026-07-04"), 0, 33))
    for day in ("2026-08-04", "2026-09-04", "2026-10-04"):
        close_as_run(store, cat, cat.accounts[0].calendar.midnight(D(day)) + HOUR, HOUR)
    assert sorted(_issued(store, "daniel")) == [(D("2026-07-04"), ""), (D("2026-08-04"), "")]
    store.add_active_users(_users("daniel", D("2026-07-04"), 33, 2))
    store.add_active_users(_users("daniel", D("2026-08-04"), 0, 20))
    store_payment(store, "daniel", "pay", datetime(2026, 10, 10, 9, tzinfo=UTC), "p")
    store.add_active_users(_users("daniel", D("2026-10-04"), 0, 40))
    estimated, issued = _at_the_end(store, cat, "daniel", "2026-11-04")
    assert (D("2026-09-04"), "") not in issued and (D("2026-10-04"), "") not in issued
    assert _same(estimated, issued[(D("2026-11-04"), "")]) == [
        ("minimum", "3", "6.00"), ("overage", "37", "74.00"), ("adjustment", "2", "4.00")]
