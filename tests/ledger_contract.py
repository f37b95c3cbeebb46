"""The ledger's part of the store contract (aggregation/ledger.py), on every engine: the same
modules that import tests/store_contract.py import these, with its fixtures `store` and
`merge`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime

import numpy as np
import numpy.typing as npt

from aggregation import (
    EventRow,
    LedgerColumns,
    LedgerCount,
    LedgerRow,
    Store,
    StoredEvents,
    day_number,
    reasons_text,
)
from aggregation.store import EPOCH_DAY

Merge = Callable[[], None]
JAN = date(2024, 1, 1)
FEB = date(2024, 2, 1)


def ledger_columns(rows: Sequence[LedgerRow]) -> LedgerColumns:
    def counts(name: str) -> npt.NDArray[np.int64]:
        return np.array([getattr(row, name) for row in rows], dtype=np.int64)

    return LedgerColumns(
        team=[row.team for row in rows],
        period_start=np.array([day_number(row.period_start) for row in rows], dtype=np.int32),
        topic=[row.topic for row in rows], partition=counts("partition"),
        offset=counts("offset"), received=counts("received"), accepted=counts("accepted"),
        duplicates=counts("duplicates"), written=counts("written"), late=counts("late"),
        rejected=counts("rejected"), reasons=[row.reasons for row in rows])


def message(team: str, period: date, offset: int, *, accepted: int = 3, duplicates: int = 1,
            late: int = 0, rejected: dict[str, int] | None = None, partition: int = 0
            ) -> LedgerRow:
    refused = sum((rejected or {}).values())
    return LedgerRow(team, period, "activity-events", partition, offset, accepted + refused,
                     accepted, duplicates, accepted - duplicates, late, refused,
                     reasons_text(rejected or {}))


def test_the_ledger_sums_each_team_and_period_in_range(store: Store, merge: Merge) -> None:
    rows = [
        message("a", JAN, 1), message("a", JAN, 2, rejected={"invalid_json": 1}),
        message("a", FEB, 3, late=2), message("b", JAN, 1, partition=1,
                                               rejected={"future_time": 2, "invalid_json": 1}),
        message("c", JAN, 9),
    ]
    store.add_ledger_columns(ledger_columns(rows))
    merge()
    assert store.ledger("a", "b") == [
        LedgerCount("a", JAN, 2, 7, 6, 2, 4, 0, 1, "invalid_json=1"),
        LedgerCount("a", FEB, 1, 3, 3, 1, 2, 2, 0, ""),
        LedgerCount("b", JAN, 1, 6, 3, 1, 2, 0, 3, "future_time=2,invalid_json=1"),
    ]
    assert store.ledger_totals() == LedgerCount(
        "", EPOCH_DAY, 5, 19, 15, 5, 10, 2, 4, "future_time=2,invalid_json=2")


def test_a_message_written_again_counts_once(store: Store, merge: Merge) -> None:
    first = message("a", JAN, 7, accepted=5, duplicates=2)
    again = message("a", JAN, 7, accepted=5, duplicates=0)  # redelivered: an empty window
    store.add_ledger_columns(ledger_columns([first, message("a", JAN, 8)]))
    store.add_ledger_columns(ledger_columns([again, first]))
    merge()
    (count,) = store.ledger("a", "a")
    assert count.messages == 2
    # the delivery that wrote the most: 5 of message 7, 2 of message 8
    assert (count.received, count.accepted, count.duplicates, count.written) == (8, 8, 1, 7)


def test_a_delivery_that_wrote_nothing_never_hides_one_that_wrote(
    store: Store, merge: Merge
) -> None:
    wrote = message("a", JAN, 7, accepted=4, duplicates=1)
    # the same message again to a worker whose window held its events: all duplicates
    repeat = message("a", JAN, 7, accepted=4, duplicates=4)
    store.add_ledger_columns(ledger_columns([wrote]))
    store.add_ledger_columns(ledger_columns([repeat]))
    merge()
    (count,) = store.ledger("a", "a")
    assert (count.messages, count.duplicates, count.written) == (1, 1, 3)


def test_an_empty_ledger_sums_to_zero(store: Store) -> None:
    assert store.ledger("", "\U0010ffff") == []
    assert store.ledger_totals() == LedgerCount("", EPOCH_DAY, 0, 0, 0, 0, 0, 0, 0, "")


def _event(team: str, period: date, source: str, event_id: str, user: str) -> EventRow:
    return EventRow(team, period, period, "login", source, event_id, user,
                    datetime(period.year, period.month, 2, tzinfo=UTC))


def test_stored_events_count_distinct_events_and_their_users(
    store: Store, merge: Merge
) -> None:
    store.add_events([
        _event("a", JAN, "s", "1", "ann"), _event("a", JAN, "s", "1", "ann"),
        _event("a", JAN, "t", "1", "ann"), _event("a", JAN, "s", "2", "bob"),
        _event("a", FEB, "s", "3", "bob"), _event("b", JAN, "s", "1", "cy"),
    ])
    merge()
    assert store.stored_events("a", "a") == [StoredEvents("a", JAN, 3, 2),
                                              StoredEvents("a", FEB, 1, 1)]
    assert store.stored_events("b", "z") == [StoredEvents("b", JAN, 1, 1)]


def test_deleting_usage_and_dropping_months_take_the_ledger_along(
    store: Store, merge: Merge
) -> None:
    store.add_ledger_columns(ledger_columns([
        message("a", JAN, 1), message("a", FEB, 2), message("b", JAN, 3), message("b", FEB, 4),
    ]))
    merge()
    store.drop_event_months([202401])
    assert [(c.team, c.period_start) for c in store.ledger("a", "b")] == [("a", FEB), ("b", FEB)]
    assert store.delete_usage("a") >= 1
    assert [(c.team, c.period_start) for c in store.ledger("a", "b")] == [("b", FEB)]
