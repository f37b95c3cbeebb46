"""The conservation ledger's identities (invoicing/reconcile.py) and their runner
(metering/reconcile.py) on the in-memory store: a pipeline simulated here (window, worker
restarts, producer retries, rejections, invoices and their adjustments) always balances; a
user or event row removed or added behind it breaks the named identity with the two numbers;
a ledger replayed changes nothing."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from aggregation import (
    ActiveUserRow,
    EventRow,
    LedgerCount,
    LedgerRow,
    MemoryStore,
    StoredInvoice,
    StoreError,
    reasons_text,
)
from invoicing.reconcile import Identity, PeriodLedger, reconcile_rows, violation_line
from metering.api.ledger import LedgerOut, ledger_view
from metering.metrics import LedgerCollector
from metering.reconcile import (
    LAST_TEAM,
    period_json,
    period_text,
    reconcile_period,
    reconcile_range,
    reconcile_store,
    team_ranges,
    write_report,
)
from schemas import REJECT_REASONS, UsageRecord
from tests.builders import account, catalog
from tests.ledger_contract import ledger_columns

JAN, FEB, MAR = date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1)
TOPIC = "activity-events"
TEAMS = ("a", "b", "c")
PERIODS = (JAN, FEB)


# --- a pipeline simulated: what the worker and the close would write -------------------------

Event = tuple[str, date, str, str]  # team, period, event id, user (source "s")


@dataclass
class Pipeline:
    """The rows a worker and a close would have written, as lists to load into a store."""

    events: list[EventRow] = field(default_factory=list)
    users: list[ActiveUserRow] = field(default_factory=list)
    ledger: list[LedgerRow] = field(default_factory=list)
    invoices: list[StoredInvoice] = field(default_factory=list)

    def load(self, store: MemoryStore | None = None) -> MemoryStore:
        store = store or MemoryStore()
        store.ensure_schema()
        store.add_events(self.events)
        store.add_active_users(self.users)
        if self.ledger:
            store.add_ledger_columns(ledger_columns(self.ledger))
        store.add_invoices(self.invoices)
        return store


def _event_row(event: Event) -> EventRow:
    team, period, ident, user = event
    return EventRow(team, period, period, "login", "s", ident, user,
                    datetime(period.year, period.month, 2, tzinfo=UTC))


def _user_row(event: Event) -> ActiveUserRow:
    team, period, ident, user = event
    return ActiveUserRow(team, period, user, datetime(period.year, period.month, 2, tzinfo=UTC),
                         ident, "s", "login")


@dataclass(frozen=True)
class Message:
    events: tuple[int, ...]  # indexes into the event pool, repeats allowed
    rejected: tuple[tuple[str, date, str], ...]  # team ("" for none), period, reason
    restart: bool  # the worker restarted before this message: its window is empty


def simulate(pool: Sequence[Event], messages: Sequence[Message],
             billing: Sequence[tuple[str, date, tuple[int, ...]]]) -> Pipeline:
    """Run `messages` through a worker with a dedupe window, then issue invoices: `billing`
    gives per (team, period) the users each successive invoice records, as shares of the
    period's MAU in percent (rising)."""
    out = Pipeline()
    window: set[str] = set()
    for offset, message in enumerate(messages):
        if message.restart:
            window.clear()
        sums: dict[tuple[str, date], list[int]] = {}  # accepted, window dups, written
        reasons: dict[tuple[str, date], dict[str, int]] = {}
        for index in message.events:
            event = pool[index]
            counts = sums.setdefault(event[:2], [0, 0, 0])
            counts[0] += 1
            if event[2] in window:
                counts[1] += 1
            else:
                window.add(event[2])
                counts[2] += 1
                out.events.append(_event_row(event))
                out.users.append(_user_row(event))
        for team, period, reason in message.rejected:
            sums.setdefault((team, period), [0, 0, 0])
            held = reasons.setdefault((team, period), {})
            held[reason] = held.get(reason, 0) + 1
        for (team, period), (accepted, dups, written) in sorted(sums.items()):
            refused = reasons.get((team, period), {})
            rejected = sum(refused.values())
            out.ledger.append(LedgerRow(team, period, TOPIC, 0, offset, accepted + rejected,
                                        accepted, dups, written, 0, rejected,
                                        reasons_text(refused)))
    mau: dict[tuple[str, date], set[str]] = {}
    for row in out.users:
        mau.setdefault((row.team, row.period_start), set()).add(row.user_id)
    for team, period, shares in billing:
        users = len(mau.get((team, period), ()))
        for n, share in enumerate(shares):
            record = UsageRecord(period_start=period, period_end=date(2026, 12, 31),
                                 active_users=users * share // 100)
            out.invoices.append(StoredInvoice(team, date(2026, 4 + n, 1), "{}",
                                              period.isoformat(), (record,)))
    return out


EVENT_POOL = st.lists(
    st.tuples(st.sampled_from(TEAMS[:2]), st.sampled_from(PERIODS),
              st.sampled_from(["u1", "u2", "u3", "u4"])),
    min_size=1, max_size=12,
).map(lambda drawn: [(team, period, f"e{i}", user) for i, (team, period, user) in
                     enumerate(drawn)])


@st.composite
def pipelines(draw: st.DrawFn) -> Pipeline:
    pool = draw(EVENT_POOL)
    indexes = st.integers(0, len(pool) - 1)
    rejected = st.tuples(st.sampled_from(("", *TEAMS[:2])), st.sampled_from(PERIODS),
                         st.sampled_from(sorted(REJECT_REASONS)))
    messages = draw(st.lists(st.builds(
        Message, events=st.lists(indexes, max_size=6).map(tuple),
        rejected=st.lists(rejected, max_size=2).map(tuple), restart=st.booleans()),
        min_size=1, max_size=8))
    billed = draw(st.lists(st.tuples(
        st.sampled_from(TEAMS[:2]), st.sampled_from(PERIODS),
        st.lists(st.integers(0, 100), min_size=1, max_size=3).map(lambda s: tuple(sorted(s)))),
        max_size=3, unique_by=lambda b: b[:2]))
    return simulate(pool, messages, billed)


def everything(store: MemoryStore) -> list[PeriodLedger]:
    return reconcile_range(store, "", LAST_TEAM)


def identity(period: PeriodLedger, name: str) -> Identity:
    (found,) = [i for i in period.identities if i.name == name]
    return found


def at(periods: Sequence[PeriodLedger], team: str, start: date) -> PeriodLedger:
    (found,) = [p for p in periods if (p.team, p.period_start) == (team, start)]
    return found


# --- properties ------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(pipelines())
def test_a_pipeline_always_balances(pipeline: Pipeline) -> None:
    periods = everything(pipeline.load())
    assert [p.violations for p in periods] == [()] * len(periods)
    for period in periods:
        assert period.received == period.accepted + period.rejected
        assert period.accepted == period.distinct_events + period.duplicates
        assert identity(period, "users").holds is True
        if period.billing is not None:
            billing = period.billing
            assert billing.users + billing.adjusted + billing.pending == period.counted_users


@settings(max_examples=20, deadline=None)
@given(pipelines())
def test_a_ledger_and_events_replayed_change_nothing(pipeline: Pipeline) -> None:
    once = everything(pipeline.load())
    assert everything(pipeline.load(pipeline.load())) == once


@settings(max_examples=20, deadline=None)
@given(pipelines(), st.integers(1, 4))
def test_walking_the_store_in_ranges_sees_each_period_once(pipeline: Pipeline, size: int
                                                           ) -> None:
    store = pipeline.load()
    teams = catalog(account("b", "2026-01-01"), account("a", "2026-01-01"),
                    account("a0", "2026-01-01"), account("zz", "2026-01-01"))
    assert list(reconcile_store(store, teams, batch_teams=size)) == everything(store)


@given(st.lists(st.text(max_size=3), max_size=8), st.integers(1, 3), st.text(max_size=4))
def test_team_ranges_hold_every_team_exactly_once(teams: list[str], size: int, probe: str
                                                  ) -> None:
    kept = [span for span in team_ranges(teams, size) if span.first <= probe <= span.last
            and (span.below is None or probe < span.below)]
    assert len(kept) == 1
    assert team_ranges(teams, size)[0].first == ""


@settings(max_examples=30, deadline=None)
@given(pipelines(), st.data())
def test_a_user_row_removed_breaks_users_and_maybe_billed(pipeline: Pipeline,
                                                          data: st.DataObject) -> None:
    users = {(row.team, row.period_start, row.user_id) for row in pipeline.users}
    if not users:
        return
    team, start, user = data.draw(st.sampled_from(sorted(users)))
    before = at(everything(pipeline.load()), team, start)
    lost = replace(pipeline, users=[row for row in pipeline.users
                                    if (row.team, row.period_start, row.user_id)
                                    != (team, start, user)])
    after = at(everything(lost.load()), team, start)
    assert identity(after, "users")[1:4] == (False, before.counted_users - 1,
                                             before.stored_users)
    if before.billing is not None:
        billing = before.billing
        booked = billing.users + billing.adjusted
        assert identity(after, "billed").holds is (billing.pending > 0)
        if billing.pending == 0:
            assert identity(after, "billed")[2:4] == (booked, before.counted_users - 1)
    assert {i.name for i in after.violations} <= {"users", "billed"}


@settings(max_examples=30, deadline=None)
@given(pipelines(), st.sampled_from(TEAMS), st.sampled_from(PERIODS), st.booleans())
def test_an_event_added_around_the_pipeline_is_caught(
    pipeline: Pipeline, team: str, start: date, new_user: bool
) -> None:
    before = {(p.team, p.period_start): p for p in everything(pipeline.load())}
    period = before.get((team, start))
    known = sorted({row.user_id for row in pipeline.events
                    if (row.team, row.period_start) == (team, start)})
    user = "intruder" if new_user or not known else known[0]
    added = replace(pipeline, events=[*pipeline.events,
                                      _event_row((team, start, "forged", user))])
    after = at(everything(added.load()), team, start)
    distinct = 0 if period is None else period.distinct_events
    stored_dups = 0 if period is None else period.store_duplicates
    accepted = identity(after, "accepted")
    if period is None or not period.has_ledger:
        assert accepted[1:4] == (False, 0, distinct + 1)
        assert "no ledger rows" in accepted.note
    elif stored_dups == 0:  # nothing the forged event could pass for
        assert accepted[1:4] == (False, period.accepted, period.accepted + 1)
    else:  # it passes for one store-key duplicate less
        assert accepted.holds is True
        assert after.store_duplicates == stored_dups - 1
    users = identity(after, "users")
    if user == "intruder":
        assert users[1:4] == (False, after.counted_users, after.counted_users + 1)
    else:
        assert users.holds is True


@settings(max_examples=30, deadline=None)
@given(pipelines(), st.data())
def test_an_event_removed_shows_when_its_user_goes_with_it(pipeline: Pipeline,
                                                          data: st.DataObject) -> None:
    keys = sorted({(row.team, row.period_start, row.event_id) for row in pipeline.events})
    team, start, ident = data.draw(st.sampled_from(keys)) if keys else ("a", JAN, "")
    if not keys:
        return
    before = at(everything(pipeline.load()), team, start)
    rest = [row for row in pipeline.events if (row.team, row.period_start, row.event_id)
            != (team, start, ident)]
    after = at(everything(replace(pipeline, events=rest).load()), team, start)
    # a lost event looks like one more store-key duplicate: `accepted` still holds
    assert identity(after, "accepted").holds is True
    assert after.store_duplicates == before.store_duplicates + 1
    (user,) = {row.user_id for row in pipeline.events
               if (row.team, row.period_start, row.event_id) == (team, start, ident)}
    alone = all(row.user_id != user for row in rest
                if (row.team, row.period_start) == (team, start))
    users = identity(after, "users")
    if alone:
        assert users[1:4] == (False, before.counted_users, before.stored_users - 1)
    else:
        assert users.holds is True


@settings(max_examples=20, deadline=None)
@given(pipelines(), st.data())
def test_a_period_whose_ledger_rows_are_lost_is_caught(pipeline: Pipeline,
                                                       data: st.DataObject) -> None:
    written = sorted({(row.team, row.period_start) for row in pipeline.events})
    if not written:
        return
    key = data.draw(st.sampled_from(written))
    before = at(everything(pipeline.load()), *key)
    lost = replace(pipeline, ledger=[row for row in pipeline.ledger
                                     if (row.team, row.period_start) != key])
    accepted = identity(at(everything(lost.load()), *key), "accepted")
    assert accepted[1:4] == (False, 0, before.distinct_events)
    assert "no ledger rows" in accepted.note


# --- examples --------------------------------------------------------------------------------


def _ledger(team: str, start: date, *, messages: int, received: int, accepted: int,
            window: int, written: int, late: int = 0, reasons: str = "") -> LedgerCount:
    rejected = received - accepted
    return LedgerCount(team, start, messages, received, accepted, window, written, late,
                       rejected, reasons)


def _invoice(team: str, day: date, users: int, start: date = JAN,
             reference: str = "") -> StoredInvoice:
    return StoredInvoice(team, day, "{}", reference,
                         (UsageRecord(period_start=start, period_end=FEB, active_users=users),))


def test_the_figures_of_one_period() -> None:
    from aggregation import PeriodCount, StoredEvents

    (period,) = reconcile_rows(
        [_ledger("a", JAN, messages=4, received=12, accepted=10, window=2, written=8, late=3,
                 reasons="future_time=1,invalid_json=1")],
        [StoredEvents("a", JAN, 7, 5)],
        [PeriodCount("a", JAN, 5)],
        [_invoice("a", date(2026, 3, 1), 4), _invoice("a", FEB, 2),
         _invoice("a", date(2026, 3, 1), 3, reference="crm/1")])
    assert (period.window_duplicates, period.store_duplicates, period.duplicates) == (2, 1, 3)
    assert period.reasons == (("future_time", 1), ("invalid_json", 1))
    assert period.billing is not None
    assert (period.billing.invoice_date, period.billing.users, period.billing.pending) == (
        FEB, 2, 1)
    assert [tuple(a) for a in period.billing.adjustments] == [(date(2026, 3, 1), "", 2)]
    assert [tuple(i[:4]) for i in period.identities] == [
        ("received", True, 12, 12), ("accepted", True, 10, 10), ("users", True, 5, 5),
        ("billed", True, 5, 5)]
    document = period_json(period)
    assert document["late"] == {"events": 3, "adjusted_by": [
        {"invoice_date": "2026-03-01", "reference": "", "users": 2}]}
    assert document["duplicates"] == {"window": 2, "store_key": 1, "total": 3}
    assert document["holds"] is True
    assert LedgerOut.model_validate(document).model_dump(mode="json") == document
    assert period_text(period).splitlines() == [
        "team a period 2026-01-01: 4 messages, 3 late (booked by 2026-03-01 +2 users)",
        "  received 12 = accepted 10 + rejected 2 (future_time=1, invalid_json=1): ok",
        "  accepted 10 = distinct stored 7 + duplicates 3 (window 2, store key 1); written 8: ok",
        "  users    counted 5 = among stored events 5: ok",
        "  billed   2 on 2026-02-01 + adjusted 2 (2026-03-01 +2) + pending 1 = MAU 5: ok",
    ]


def test_users_lost_after_billing_break_billed_with_both_numbers() -> None:
    (period,) = reconcile_rows([], [], [], [_invoice("a", FEB, 4), _invoice("a", MAR, 6)])
    assert [i.name for i in period.violations] == ["billed"]
    (billed,) = period.violations
    assert violation_line(period.team, period.period_start, billed) == (
        "metering: ledger: team a period 2026-01-01: billed: 6 != 0 (billed 4 on 2026-02-01 + "
        "adjusted 2 + pending 0, current MAU 0: 6 users lost from the store after billing)")


def test_a_pruned_period_is_not_checked_for_users() -> None:
    from aggregation import PeriodCount

    (period,) = reconcile_rows([], [], [PeriodCount("a", JAN, 3)], [_invoice("a", FEB, 3)])
    assert identity(period, "users")[1:] == (None, 3, 0, "raw events pruned")
    assert period.violations == ()
    assert "  users    counted 3, raw events pruned: not checked" in period_text(period)


def test_events_stored_without_ledger_rows_are_a_violation() -> None:
    from aggregation import StoredEvents

    (period,) = reconcile_rows([], [StoredEvents("a", JAN, 4, 2)], [], [])
    assert [(i.name, i.left, i.right) for i in period.violations] == [
        ("accepted", 0, 4), ("users", 0, 2)]
    assert "written before the ledger existed" in period.violations[0].note


def test_rows_that_do_not_add_up_break_accepted() -> None:
    (period,) = reconcile_rows([_ledger("a", JAN, messages=1, received=5, accepted=5,
                                        window=1, written=3)], [], [], [])
    (accepted,) = period.violations
    assert (accepted.name, accepted.left, accepted.right) == ("accepted", 5, 4)
    assert "do not add up" in accepted.note


def test_rejections_of_no_team_and_an_empty_period() -> None:
    store = MemoryStore()
    store.ensure_schema()
    store.add_ledger_columns(ledger_columns([LedgerRow(
        "", JAN, TOPIC, 0, 1, 2, 0, 0, 0, 0, 2, "invalid_json=2")]))
    (period,) = everything(store)
    assert (period.team, period.received, period.rejected, period.violations) == ("", 2, 2, ())
    assert period_text(period).startswith('team "" period 2026-01-01: 1 message\n')
    empty = reconcile_period(store, "a", FEB)
    assert (empty.team, empty.period_start, empty.messages, empty.violations) == (
        "a", FEB, 0, ())


def test_the_report_streams_and_counts_violations() -> None:
    pipeline = simulate([("a", JAN, "e1", "u1"), ("b", JAN, "e2", "u2")],
                        [Message((0, 1, 1), (), False)], [("a", JAN, (100,))])
    store = pipeline.load()
    out, err = io.StringIO(), io.StringIO()
    assert write_report(everything(store), as_json=True, one=False, out=out, err=err) == 0
    assert [p["team"] for p in json.loads(out.getvalue())] == ["a", "b"]
    assert err.getvalue() == ""
    store.add_active_users([ActiveUserRow("b", JAN, "ghost", datetime(2026, 1, 3, tzinfo=UTC),
                                          "x", "s", "login")])
    out, err = io.StringIO(), io.StringIO()
    assert write_report(everything(store), as_json=False, one=False, out=out, err=err) == 1
    assert err.getvalue() == (
        "metering: ledger: team b period 2026-01-01: users: 2 != 1 (counted users 2, "
        "distinct users among stored events 1: counted users whose events are gone)\n")
    assert out.getvalue().endswith("reconciled 2 periods of 2 teams: 1 violation\n")
    out = io.StringIO()
    write_report([reconcile_period(store, "a", JAN)], as_json=True, one=True, out=out, err=err)
    assert json.loads(out.getvalue())["billed"]["users"] == 1


def test_the_api_view_is_the_json_of_the_cli() -> None:
    pipeline = simulate([("a", JAN, "e1", "u1")], [Message((0, 0), (), False)], [])
    store = pipeline.load()
    view = ledger_view(store, catalog(account("a", "2026-01-01")).accounts[0], JAN)
    assert view.model_dump(mode="json") == period_json(reconcile_period(store, "a", JAN))
    assert (view.duplicates.window, view.distinct_events, view.holds) == (1, 1, True)


# --- Prometheus totals -----------------------------------------------------------------------


class _Totals:
    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.reads = 0
        self.down = False

    def ledger_totals(self) -> LedgerCount:
        self.reads += 1
        if self.down:
            raise StoreError("store down")
        return self.store.ledger_totals()


def _samples(registry: CollectorRegistry) -> dict[str, float]:
    text = generate_latest(registry).decode()
    return {line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
            for line in text.splitlines() if line and not line.startswith("#")}


def test_the_ledger_totals_as_metrics_read_the_store_at_most_once_a_minute() -> None:
    pipeline = simulate([("a", JAN, "e1", "u1"), ("b", FEB, "e2", "u2")],
                        [Message((0, 0, 1), (("", JAN, "invalid_json"),), False)], [])
    totals = _Totals(pipeline.load())
    now = [0.0]
    registry = CollectorRegistry()
    registry.register(LedgerCollector(totals, interval_seconds=60, clock=lambda: now[0]))
    assert totals.reads == 0  # registering asks no store
    samples = _samples(registry)
    assert samples["metering_ledger_up"] == 1
    assert samples["metering_ledger_messages"] == 3  # one message, three (team, period) rows
    assert samples['metering_ledger_events{stage="received"}'] == 4
    assert samples['metering_ledger_events{stage="duplicate_window"}'] == 1
    assert samples['metering_ledger_events{stage="written"}'] == 2
    assert samples['metering_ledger_rejected{reason="invalid_json"}'] == 1
    assert samples['metering_ledger_rejected{reason="future_time"}'] == 0
    assert not any("team" in name for name in samples)
    totals.down = True
    now[0] = 59.0
    assert _samples(registry)["metering_ledger_up"] == 1 and totals.reads == 1
    now[0] = 60.0
    assert _samples(registry) == {"metering_ledger_up": 0.0}
    assert totals.reads == 2


def test_a_negative_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="interval"):
        LedgerCollector(MemoryStore(), interval_seconds=-1)
