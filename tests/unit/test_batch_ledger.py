"""The worker's ledger rows (metering/stream/ledger.py through ActivityBatcher.plan): per
message, team and period, what arrived and what became of it; and on the in-memory store,
that a batch delivered again counts once."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation import LedgerCount, LedgerRow, MemoryStore
from metering.stream import ActivityBatcher
from metering.stream.ledger import rejected_team
from tests.unit.test_batch import GRACE, JULY, NOW, batcher, batches, event, message

TOPIC = "activity-events"
JUNE = date(2026, 6, 1)


def rows(activity: ActivityBatcher, values: list[bytes], *, first_offset: int = 0
         ) -> list[LedgerRow]:
    plan = activity.plan(values, now=NOW)
    count = len(values)
    return plan.ledger.columns([TOPIC] * count, [0] * count,
                               list(range(first_offset, first_offset + count))).rows()


def test_each_message_team_and_period_gets_one_row() -> None:
    activity = batcher()
    june = datetime(2026, 6, 10, tzinfo=UTC)
    values = [
        message(event("e1"), event("e1"), event("e2", "u2"), event("e3", at=june)),
        b'{"specversion": ',  # names no team
        message(event("e4", team="team-b"), {**event("e5", team="team-b"), "type": "x"}),
    ]
    assert rows(activity, values) == [
        LedgerRow("team-a", JUNE, TOPIC, 0, 0, 1, 1, 0, 1, 1, 0, ""),  # late: June is closed
        LedgerRow("team-a", JULY, TOPIC, 0, 0, 3, 3, 1, 2, 0, 0, ""),
        LedgerRow("", JULY, TOPIC, 0, 1, 1, 0, 0, 0, 0, 1, "invalid_json=1"),
        LedgerRow("team-b", JULY, TOPIC, 0, 2, 2, 1, 0, 1, 0, 1, "unknown_type=1"),
    ]


def test_repeats_the_window_holds_count_where_their_event_belongs() -> None:
    activity = batcher()
    first = activity.plan([message(event("e1"), event("e2"))], now=NOW)
    activity.committed(first)
    assert rows(activity, [message(event("e2"), event("e3"))], first_offset=1) == [
        LedgerRow("team-a", JULY, TOPIC, 0, 1, 2, 2, 1, 1, 0, 0, "")]


def test_rejected_events_count_in_the_period_they_were_received_in() -> None:
    future = NOW + timedelta(days=40)  # rejected: too far ahead
    (row,) = rows(batcher(), [message(event("e1", at=future))])
    assert (row.team, row.period_start, row.rejected, row.reasons) == (
        "team-a", JULY, 1, "future_time=1")


def test_a_rejected_event_names_its_team_only_when_it_is_a_valid_one() -> None:
    assert rejected_team(json.dumps({"subject": "team-a"}).encode()) == "team-a"
    assert rejected_team(json.dumps({"subject": "no spaces"}).encode()) == ""
    assert rejected_team(json.dumps({"subject": 7}).encode()) == ""
    assert rejected_team(b"[1, 2]") == ""
    assert rejected_team(b"\xff") == ""
    assert rejected_team(b"[" * 100_000) == ""


@settings(max_examples=40)
@given(cut=batches(), bad=st.lists(st.sampled_from([b"{", b"\xff", b"[]"]), max_size=3))
def test_the_ledger_accounts_for_every_member_of_every_message(
    cut: list[list[bytes]], bad: list[bytes]
) -> None:
    activity = batcher()
    for values in [*cut, bad]:
        plan = activity.plan(values, now=NOW)
        ledger = plan.ledger.columns([TOPIC] * len(values), [0] * len(values),
                                     list(range(len(values)))).rows()
        rejected = sum(len(found) for found in plan.rejections.values())
        assert sum(row.accepted for row in ledger) == plan.received
        assert sum(row.rejected for row in ledger) == rejected
        assert sum(row.duplicates for row in ledger) == plan.duplicates
        assert sum(row.written for row in ledger) == len(plan.events)
        assert sum(row.late for row in ledger) == sum(plan.late.values())
        assert all(row.received == row.accepted + row.rejected for row in ledger)
        assert len({row.key for row in ledger}) == len(ledger)
        activity.committed(plan)


def replay_ledger(cut: list[list[bytes]], times: int) -> list[LedgerCount]:
    """Every batch planned and written `times` over (a worker restarted before committing:
    its window forgotten), offsets as the broker numbers the messages."""
    store = MemoryStore()
    store.ensure_schema()
    for _ in range(times):
        activity, offset = batcher(), 0
        for values in cut:
            plan = activity.plan(values, now=NOW)
            count = len(values)
            store.add_ledger_columns(plan.ledger.columns(
                [TOPIC] * count, [0] * count, list(range(offset, offset + count))))
            activity.committed(plan)
            offset += count
    return store.ledger("", "\U0010ffff")


@settings(max_examples=40)
@given(cut=batches())
def test_a_stream_delivered_twice_counts_as_once(cut: list[list[bytes]]) -> None:
    assert replay_ledger(cut, 2) == replay_ledger(cut, 1)


def test_grace_keeps_a_period_open_for_the_ledger_too() -> None:
    end_of_june = datetime(2026, 7, 1, tzinfo=UTC) + GRACE - timedelta(seconds=1)
    plan = batcher().plan([message(event("e1", at=datetime(2026, 6, 10, tzinfo=UTC)))],
                          now=end_of_june)
    assert plan.ledger.late.tolist() == [0]


def test_a_message_redelivered_to_the_same_worker_keeps_what_it_wrote() -> None:
    """A rebalance hands a message back to the worker that planned it: its window holds the
    events, so the second row writes none; the store keeps the first."""
    activity, store = batcher(), MemoryStore()
    store.ensure_schema()
    values = [message(event("e1"), event("e2", "u2"))]
    for _ in range(2):
        plan = activity.plan(values, now=NOW)
        store.add_ledger_columns(plan.ledger.columns([TOPIC], [0], [5]))
        activity.committed(plan)
    (count,) = store.ledger("team-a", "team-a")
    assert (count.messages, count.accepted, count.duplicates, count.written) == (1, 2, 0, 2)


def test_rejected_events_count_where_their_message_arrived_whenever_it_is_planned() -> None:
    bad = [b'{"specversion": ']
    june_30 = datetime(2026, 6, 30, 23, 59, tzinfo=UTC).timestamp()
    for now in (NOW, NOW + timedelta(days=20)):  # planned again after the month turned
        (row,) = batcher().plan(bad, now=now, arrivals=[june_30]).ledger.columns(
            [TOPIC], [0], [0]).rows()
        assert (row.team, row.period_start, row.rejected) == ("", JUNE, 1)
    # a timestamp ahead of the moment it is planned counts at that moment
    (row,) = batcher().plan(bad, now=NOW, arrivals=[NOW.timestamp() + 86_400 * 40]
                            ).ledger.columns([TOPIC], [0], [0]).rows()
    assert row.period_start == JULY
