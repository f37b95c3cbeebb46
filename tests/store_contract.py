"""The store contract, engine by engine: every test here runs on the ClickHouse server and
chdb (tests/integration/test_store_contract.py) and on the in-memory double
(tests/unit/test_memory_store.py). A module importing these tests provides the fixtures
`bare_store` (a store whose schema does not exist yet) and `merge` (forces the merges an
engine would run at an unknown time; a no-op where there are none)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregation import (
    ActiveUserColumns,
    ActiveUserRow,
    DailyUsage,
    EventColumns,
    EventRow,
    InvoiceKey,
    PeriodCount,
    Store,
    StoredChange,
    StoredInvoice,
    StoreError,
)
from aggregation._cluster import ClusterStore
from aggregation._schema import SqlStore
from aggregation.store import EPOCH_DAY, Days, Seconds, day_number
from schemas import UsageRecord

Merge = Callable[[], None]


def optimize(store: SqlStore, table: str) -> None:
    """OPTIMIZE `table` FINAL: on a cluster, each shard's local table on its first replica
    holding parts (ClickHouse 18.16 refuses it on an empty replicated table: "Unknown log
    entry type")."""
    if not isinstance(store, ClusterStore):
        store._execute(f"OPTIMIZE TABLE {store.database}.{table} FINAL")  # noqa: SLF001
        return
    local = f"{table}_local"
    for node in store.nodes():
        replica = store._node(node)  # noqa: SLF001
        if node.replica == 1 and replica._select(  # noqa: SLF001
            "SELECT count() FROM system.parts WHERE database = %(db)s AND table = %(table)s "
            "AND active", {"db": store.database, "table": local},
        )[0][0]:
            replica._execute(f"OPTIMIZE TABLE {store.database}.{local} FINAL")  # noqa: SLF001

JAN = date(2024, 1, 1)
FEB = date(2024, 2, 1)
T0 = datetime(2024, 1, 3, 12, 0, tzinfo=UTC)
AWKWARD_IDS = [
    "plain",
    "it's",
    'say "hi"',
    "back\\slash",
    "\\'",
    "tab\there",
    "new\nline",
    "nul\x00byte",
    "%(team)s",
    "'); DROP TABLE active_users; --",
    "é",
    "日本",
    "😀",
    "",
]


def user_row(
    user: str,
    *,
    team: str = "acme",
    period: date = JAN,
    at: datetime = T0,
    event: str | None = None,
    source: str = "web",
    event_type: str = "login",
) -> ActiveUserRow:
    return ActiveUserRow(
        team=team,
        period_start=period,
        user_id=user,
        first_time=at,
        event_id=event if event is not None else f"ev-{user}-{at.timestamp():.0f}",
        source=source,
        event_type=event_type,
    )


def days(dates: Iterable[date]) -> Days:
    return np.array([(day - EPOCH_DAY).days for day in dates], dtype=np.int32)


def seconds(times: Iterable[datetime]) -> Seconds:
    return np.array([int(moment.timestamp()) for moment in times], dtype=np.int64)


def user_columns(rows: Sequence[ActiveUserRow]) -> ActiveUserColumns:
    """`rows` as the worker writes them: strings in lists, dates and times in arrays."""
    return ActiveUserColumns(
        team=[row.team for row in rows],
        period_start=days(row.period_start for row in rows),
        user_id=[row.user_id for row in rows],
        first_time=seconds(row.first_time for row in rows),
        event_id=[row.event_id for row in rows],
        source=[row.source for row in rows],
        event_type=[row.event_type for row in rows],
    )


def event_columns(rows: Sequence[EventRow]) -> EventColumns:
    """`rows` as the worker writes them: strings in lists, dates and times in arrays."""
    return EventColumns(
        team=[row.team for row in rows],
        period_start=days(row.period_start for row in rows),
        day=days(row.day for row in rows),
        event_type=[row.event_type for row in rows],
        source=[row.source for row in rows],
        event_id=[row.event_id for row in rows],
        user_id=[row.user_id for row in rows],
        time=seconds(row.time for row in rows),
    )


@pytest.fixture
def store(bare_store: Store) -> Store:
    bare_store.ensure_schema()
    return bare_store


def test_ensure_schema_is_idempotent(bare_store: Store) -> None:
    bare_store.ensure_schema()
    bare_store.add_active_users([user_row("u1")])
    bare_store.ensure_schema()
    assert bare_store.mau("acme", JAN) == 1


def test_missing_schema_is_a_store_error(bare_store: Store) -> None:
    with pytest.raises(StoreError):
        bare_store.mau("acme", JAN)


def test_empty_store(store: Store) -> None:
    store.add_active_users([])
    assert store.mau("acme", JAN) == 0
    assert store.active_users("acme", JAN) == []
    assert store.invoices() == []


def test_mau_counts_distinct_users(store: Store) -> None:
    store.add_active_users(
        [user_row("u1"), user_row("u2"), user_row("u1", at=T0 + timedelta(hours=1)),
         user_row("u3")]
    )
    assert store.mau("acme", JAN) == 3


def test_rewriting_rows_changes_nothing(store: Store, merge: Merge) -> None:
    rows = [user_row("u1"), user_row("u2", at=T0 + timedelta(minutes=5))]
    later = user_row("u1", at=T0 + timedelta(days=2), event="later", source="api")
    store.add_active_users(rows)
    store.add_active_users(rows)
    store.add_active_users([later])
    store.add_active_users([*rows, later])
    assert store.mau("acme", JAN) == 2
    assert store.active_users("acme", JAN) == rows
    merge()
    assert store.mau("acme", JAN) == 2
    assert store.active_users("acme", JAN) == rows


def test_first_event_is_the_earliest(store: Store, merge: Merge) -> None:
    late = user_row("u1", at=T0 + timedelta(hours=3), event="late", event_type="click")
    early = user_row("u1", at=T0, event="early", source="mobile")
    store.add_active_users([late])
    store.add_active_users([early])
    store.add_active_users([late])
    assert store.active_users("acme", JAN) == [early]
    merge()
    assert store.active_users("acme", JAN) == [early]


def test_same_second_ties_go_to_the_smallest_event_id(store: Store, merge: Merge) -> None:
    store.add_active_users([user_row("u1", event="b"), user_row("u1", event="c")])
    store.add_active_users([user_row("u1", event="a")])
    store.add_active_users([user_row("u1", event="d")])
    assert [row.event_id for row in store.active_users("acme", JAN)] == ["a"]
    merge()
    assert [row.event_id for row in store.active_users("acme", JAN)] == ["a"]


def test_teams_and_periods_are_separate(store: Store) -> None:
    store.add_active_users(
        [
            user_row("u1"),
            user_row("u2"),
            user_row("u1", team="globex"),
            user_row("u1", period=FEB, at=T0 + timedelta(days=31)),
        ]
    )
    assert store.mau("acme", JAN) == 2
    assert store.mau("globex", JAN) == 1
    assert store.mau("acme", FEB) == 1
    assert store.mau("globex", FEB) == 0
    assert [row.user_id for row in store.active_users("globex", JAN)] == ["u1"]
    assert store.active_users("acme", FEB) == [
        user_row("u1", period=FEB, at=T0 + timedelta(days=31))
    ]


def test_active_users_are_ordered_by_user_id(store: Store) -> None:
    rows = [
        user_row(user, at=T0 + timedelta(seconds=i)) for i, user in enumerate(["c", "a", "b"])
    ]
    store.add_active_users(rows)
    assert store.active_users("acme", JAN) == sorted(rows, key=lambda row: row.user_id)


def test_awkward_user_ids_round_trip(store: Store) -> None:
    rows = [user_row(user, event=f"e{i}", source=user) for i, user in enumerate(AWKWARD_IDS)]
    store.add_active_users(rows)
    store.add_active_users(rows)
    assert store.mau("acme", JAN) == len(AWKWARD_IDS)
    assert store.active_users("acme", JAN) == sorted(rows, key=lambda row: row.user_id)
    assert store.mau("'); DROP TABLE active_users; --", JAN) == 0
    assert store.active_users("acme\\", JAN) == []


def test_naive_first_time_is_rejected(store: Store) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        store.add_active_users([user_row("u1", at=datetime(2024, 1, 3))])


def test_an_invoice_written_twice_reads_back_once(store: Store, merge: Merge) -> None:
    first = StoredInvoice("acme", JAN, '{"total": "10.00", "note": "é\\n\'quoted\'"}\n')
    store.add_invoices([first], batch="h/1")
    store.add_invoices([first], batch="h/1")
    store.add_invoices([])
    merge()
    assert store.invoices() == [first]
    assert store.invoices()[0].body.encode() == first.body.encode()


def test_invoices_are_ordered_and_filtered_by_team(store: Store) -> None:
    invoices = [
        StoredInvoice("globex", FEB, "g-feb"),
        StoredInvoice("acme", FEB, "a-feb"),
        StoredInvoice("globex", JAN, "g-jan"),
        StoredInvoice("acme", JAN, "a-jan"),
    ]
    store.add_invoices(invoices[:1])
    store.add_invoices(invoices[1:])
    ordered = sorted(invoices, key=lambda inv: (inv.team, inv.invoice_date))
    assert store.invoices() == ordered
    assert store.invoices("globex") == [inv for inv in ordered if inv.team == "globex"]
    assert store.invoices("initech") == []


def test_immediate_invoices_share_a_day_with_the_billing_date_invoice(
    store: Store, merge: Merge
) -> None:
    renewal = StoredInvoice("acme", JAN, "renewal")
    seats = StoredInvoice("acme", JAN, "seats", reference="crm/chg-1")
    upgrade = StoredInvoice("acme", JAN, "upgrade", reference="crm/chg-2")
    store.add_invoices([upgrade, seats, renewal])
    merge()
    assert store.invoices("acme") == [renewal, seats, upgrade]
    day = day_number(JAN)
    assert store.issued_keys("acme", "acme") == {
        "acme": {(day, ""), (day, "crm/chg-1"), (day, "crm/chg-2")}}


def _usage(start: date, end: date, users: int) -> UsageRecord:
    return UsageRecord(period_start=start, period_end=end, active_users=users)


MAR = date(2024, 3, 1)


def test_team_ranges_are_inclusive_in_byte_order(store: Store, merge: Merge) -> None:
    teams = ["a", "b", "b\x00", "bé", "b日本", "c", "é"]
    store.add_invoices([StoredInvoice(team, JAN, f"body-{team}") for team in reversed(teams)])
    merge()
    assert sorted(store.issued_keys("b", "c")) == ["b", "b\x00", "bé", "b日本", "c"]
    assert [inv.team for inv in store.invoices_between("bé", "é")] == ["bé", "b日本", "c", "é"]
    assert store.issued_keys("d", "d") == {}
    assert store.issued_keys("a", "a") == {"a": {(day_number(JAN), "")}}


def test_invoice_usage_round_trips_and_the_latest_billing_of_a_period_wins(
    store: Store, merge: Merge
) -> None:
    jan = StoredInvoice("acme", FEB, "feb", usage=(_usage(JAN, FEB, 8),))
    feb = StoredInvoice("acme", MAR, "mar", usage=(_usage(FEB, MAR, 3), _usage(JAN, FEB, 9)))
    seats = StoredInvoice("acme", MAR, "seats", reference="crm/1")  # no usage
    other = StoredInvoice("globex", FEB, "g", usage=(_usage(JAN, FEB, 1),))
    store.add_invoices([jan, other], batch="h/1")
    store.add_invoices([feb, seats], batch="h/2")
    merge()
    assert store.invoices("acme") == [jan, feb, seats]
    assert store.billed_usage("acme", "acme") == [
        PeriodCount("acme", JAN, 9, FEB), PeriodCount("acme", FEB, 3, MAR)]
    assert store.billed_usage("acme", "globex")[-1] == PeriodCount("globex", JAN, 1, FEB)
    assert store.batch_invoices("h/2") == [feb, seats]
    assert store.batch_invoices("h/3") == []


def test_a_void_batch_is_never_read_even_when_its_rows_land_later(
    store: Store, merge: Merge
) -> None:
    kept = StoredInvoice("acme", JAN, "kept", usage=(_usage(JAN, FEB, 1),))
    store.add_invoices([kept], batch="b/1")
    store.void_batch("a/7")
    store.void_batch("a/7")
    late = StoredInvoice("acme", FEB, "late", usage=(_usage(FEB, MAR, 9),))
    store.add_invoices([late, StoredInvoice("globex", JAN, "late-too")], batch="a/7")
    merge()
    assert store.invoices() == [kept]
    assert store.issued_keys("acme", "globex") == {"acme": {(day_number(JAN), "")}}
    assert store.invoices_between("acme", "globex") == [kept]
    assert store.batch_invoices("a/7") == []
    assert store.billed_usage("acme", "acme") == [PeriodCount("acme", JAN, 1, FEB)]
    rerated = StoredInvoice("acme", FEB, "rerated")
    store.add_invoices([rerated], batch="b/2")
    assert store.invoices("acme") == [kept, rerated]
    store.purge_void()
    store.purge_void()
    merge()
    assert store.invoices() == [kept, rerated]


def test_a_void_row_equal_to_a_live_one_does_not_hide_it(store: Store, merge: Merge) -> None:
    """A stalled close's late row can repeat a live body byte for byte (an invoice that does
    not depend on usage): merges must not let the void row replace the live one."""
    live = StoredInvoice("acme", JAN, "same body")
    store.add_invoices([live], batch="b/1")
    store.void_batch("a/2")
    store.add_invoices([live], batch="a/2")
    merge()
    store.purge_void()
    merge()
    assert store.invoices() == [live]
    assert store.issued_keys("acme", "acme") == {"acme": {(day_number(JAN), "")}}


def test_period_mau_counts_each_team_and_period_in_range(store: Store) -> None:
    store.add_active_users([
        user_row("u1"), user_row("u2"), user_row("u1", period=FEB),
        user_row("u1", team="globex"), user_row("u9", team="zeta"),
    ])
    assert store.period_mau("acme", "globex") == [
        PeriodCount("acme", JAN, 2), PeriodCount("acme", FEB, 1), PeriodCount("globex", JAN, 1)]
    assert store.period_mau("b", "c") == []


def test_leases_show_each_holder_s_latest_row(store: Store, merge: Merge) -> None:
    store.write_lease("close", "h1", seq=1, seconds=60)
    store.write_lease("close", "h1", seq=2, seconds=600, pending="h1/1")
    store.write_lease("close", "h2", seq=1, seconds=60)
    store.write_lease("close", "h2", seq=2, seconds=0)
    store.write_lease("other", "h3", seq=1, seconds=60)
    merge()
    h1, h2 = store.leases("close")
    assert (h1.holder, h1.pending, h1.seq) == ("h1", "h1/1", 2)
    assert 590 <= h1.remaining_seconds <= 600
    assert (h2.holder, h2.pending, h2.seq) == ("h2", "", 2)
    assert h2.remaining_seconds <= 0
    assert store.leases("none") == []


def _change(change_id: str, at: datetime, body: str = "{}", source: str = "crm") -> StoredChange:
    return StoredChange(team="acme", source=source, change_id=change_id, time=at, body=body)


def test_changes_between_come_team_by_team(store: Store) -> None:
    acme = _change("a", T0)
    globex = replace(_change("g", T0 - timedelta(days=1)), team="globex")
    store.add_changes([globex, acme, replace(_change("z", T0), team="zeta")])
    assert store.changes_between("acme", "globex") == [acme, globex]


def test_changes_are_idempotent_and_in_effect_order(store: Store, merge: Merge) -> None:
    later = _change("b", T0 + timedelta(days=2), '{"type": "cancel"}')
    earlier = _change("z", T0, '{"type": "add_units", "note": "it\'s \\ é"}')
    same_time = _change("a", T0, source="hr")
    store.add_changes([later, earlier])
    store.add_changes([later, earlier, same_time])
    store.add_changes([])
    merge()
    assert store.changes("acme") == [earlier, same_time, later]
    assert store.changes("globex") == []


def test_active_users_come_in_pages(store: Store) -> None:
    names = ["", *(f"u{i:02d}" for i in range(6))]  # "" sorts first and is a real id
    store.add_active_users([user_row(name) for name in reversed(names)])
    pages: list[list[str]] = []
    after: str | None = None
    while page := store.active_users("acme", JAN, after=after, limit=3):
        pages.append([row.user_id for row in page])
        after = page[-1].user_id
    assert pages == [names[:3], names[3:6], names[6:]]
    with pytest.raises(ValueError, match="limit"):
        store.active_users("acme", JAN, limit=-1)


def test_active_users_are_searched_by_what_their_id_contains(store: Store) -> None:
    names = ["ann", "Anna", "joanne", "bob", "b%b", "b_b", "zoë", "it's", "back\\slash"]
    store.add_active_users([user_row(name) for name in names])
    assert [r.user_id for r in store.active_users("acme", JAN, containing="ann")] == [
        "ann", "joanne"]  # exact text: case matters
    assert [r.user_id for r in store.active_users("acme", JAN, containing="an", after="ann",
                                                  limit=1)] == ["joanne"]
    for needle in ("%", "_", "ë", "'", "\\", "Anna"):  # no pattern characters
        assert [r.user_id for r in store.active_users("acme", JAN, containing=needle)] == [
            name for name in sorted(names) if needle in name], needle
    assert store.active_users("acme", JAN, containing="zz") == []
    assert len(store.active_users("acme", JAN, containing="")) == len(names)


def _event(
    event_id: str, user: str, *, day: date = JAN, kind: str = "login", source: str = "web"
) -> EventRow:
    return EventRow(team="acme", period_start=JAN, day=day, event_type=kind, source=source,
                    event_id=event_id, user_id=user, time=T0)


def test_daily_usage_counts_distinct_events_and_users(store: Store, merge: Merge) -> None:
    second_day = JAN + timedelta(days=1)
    rows = [
        _event("e1", "ann"), _event("e2", "ann"), _event("e3", "bob"),
        _event("e3", "bob", source="api"),  # another source: another event
        _event("e4", "ann", kind="clock_in"),
        _event("e5", "cat", day=second_day),
    ]
    store.add_events(rows)
    store.add_events(rows[:3])  # redelivery
    merge()
    store.add_events(rows)  # and again after a merge
    assert store.daily_usage("acme", JAN) == [
        DailyUsage(JAN, "clock_in", 1, 1),
        DailyUsage(JAN, "login", 4, 2),
        DailyUsage(second_day, "login", 1, 1),
    ]
    assert store.daily_usage("acme", second_day) == []
    assert store.daily_usage("globex", JAN) == []


def test_naive_times_are_rejected_in_every_write(store: Store) -> None:
    naive = datetime(2024, 1, 3)
    with pytest.raises(ValueError, match="timezone-aware"):
        store.add_events([_event("e1", "ann")._replace(time=naive)])
    with pytest.raises(ValueError, match="timezone-aware"):
        store.add_changes([_change("c1", naive)])
    assert store.daily_usage("acme", JAN) == []
    assert store.changes("acme") == []


def test_times_come_back_as_whole_utc_seconds(store: Store) -> None:
    at = T0.astimezone(timezone(timedelta(hours=2))) + timedelta(microseconds=750_000)
    store.add_active_users([user_row("u1", at=at, event="e1")])
    store.add_changes([_change("c1", at)])
    for back in (store.active_users("acme", JAN)[0].first_time, store.changes("acme")[0].time):
        assert back == T0
        assert back.utcoffset() == timedelta(0)


def test_active_user_columns_read_back_as_rows_do(store: Store, merge: Merge) -> None:
    rows = [
        user_row(user, at=T0 + timedelta(seconds=i), event=f"e-{user}", source=user,
                 event_type=user)
        for i, user in enumerate(AWKWARD_IDS)
    ]
    store.add_active_user_columns(user_columns(rows))
    store.add_active_user_columns(user_columns(rows))  # redelivery
    store.add_active_users(rows)  # and the same through rows
    expected = sorted(rows, key=lambda row: row.user_id)
    assert store.mau("acme", JAN) == len(AWKWARD_IDS)
    assert store.active_users("acme", JAN) == expected
    merge()
    assert store.mau("acme", JAN) == len(AWKWARD_IDS)
    assert store.active_users("acme", JAN) == expected
    assert store.active_users("acme", JAN, after="plain", limit=2) == [
        row for row in expected if row.user_id > "plain"
    ][:2]


def test_active_user_columns_keep_the_earliest_first_event(store: Store, merge: Merge) -> None:
    early = user_row("u1", at=T0, event="early", source="mobile")
    late = user_row("u1", at=T0 + timedelta(hours=3), event="late", event_type="click")
    other = user_row("u2", at=T0 + timedelta(minutes=5))
    store.add_active_user_columns(user_columns([late, other]))
    assert store.active_users("acme", JAN) == [late, other]
    store.add_active_user_columns(user_columns([early]))  # earlier: replaces the first event
    store.add_active_user_columns(user_columns([late, other, late]))  # later: changes nothing
    assert store.mau("acme", JAN) == 2
    assert store.active_users("acme", JAN) == [early, other]
    merge()
    assert store.active_users("acme", JAN) == [early, other]


def test_active_user_columns_keep_teams_and_periods_apart(store: Store) -> None:
    feb = user_row("u1", period=FEB, at=T0 + timedelta(days=31))
    store.add_active_user_columns(
        user_columns([user_row("u1"), user_row("u2"), user_row("u1", team="globex"), feb])
    )
    assert (store.mau("acme", JAN), store.mau("globex", JAN), store.mau("acme", FEB)) == (2, 1, 1)
    assert store.active_users("acme", FEB) == [feb]


def test_event_columns_count_as_event_rows_do(store: Store, merge: Merge) -> None:
    second_day = JAN + timedelta(days=1)
    rows = [
        _event("e1", "ann"), _event("e2", "ann"), _event("e3", "bob"),
        _event("e3", "bob", source="api"),
        _event("e4", "ann", kind="clock_in"),
        _event("e5", "cat", day=second_day),
        *(_event(f"e-{text}", text, source=text, kind=text) for text in AWKWARD_IDS),
    ]
    store.add_event_columns(event_columns(rows))
    store.add_event_columns(event_columns(rows[:3]))  # redelivery
    store.add_events(rows)  # the same through rows
    expected = sorted(
        [
            DailyUsage(JAN, "clock_in", 1, 1),
            DailyUsage(JAN, "login", 4, 2),
            DailyUsage(second_day, "login", 1, 1),
            *(DailyUsage(JAN, text, 1, 1) for text in AWKWARD_IDS),
        ],
        key=lambda usage: (usage.day, usage.event_type.encode()),
    )
    assert store.daily_usage("acme", JAN) == expected
    merge()
    store.add_event_columns(event_columns(rows))  # and again after a merge
    assert store.daily_usage("acme", JAN) == expected
    assert store.daily_usage("acme", second_day) == []


def test_empty_columns_write_nothing(store: Store) -> None:
    store.add_event_columns(event_columns([]))
    store.add_active_user_columns(user_columns([]))
    assert store.mau("acme", JAN) == 0
    assert store.active_users("acme", JAN) == []
    assert store.daily_usage("acme", JAN) == []


# ClickHouse 18.16 reads Date 1970-01-01 back as 0000-00-00 and no day after 2105 as written
FIRST_KEPT, LAST_KEPT = date(1970, 1, 2), date(2105, 12, 31)
DAY_ZERO = 0  # 1970-01-01
AFTER_DATE = day_number(LAST_KEPT) + 1  # 2106-01-01
TYPE_END = 2**16  # 2149-06-07, past Date's UInt16
BEFORE_1970 = -1
AFTER_DATETIME = 2**32  # 2106-02-07 06:28:16 UTC
DATES_KEPT = r"outside 1970-01-02\.\.2105-12-31, the days every engine of the store reads back"


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("period_start", DAY_ZERO, DATES_KEPT),
        ("period_start", AFTER_DATE, DATES_KEPT),
        ("day", DAY_ZERO, DATES_KEPT),
        ("day", AFTER_DATE, DATES_KEPT),
        ("day", BEFORE_1970, DATES_KEPT),
        ("day", TYPE_END, DATES_KEPT),
        ("time", BEFORE_1970, "DateTime's range"),
        ("time", AFTER_DATETIME, "DateTime's range"),
    ],
)
def test_event_columns_outside_the_engines_ranges_are_rejected(
    store: Store, field: str, value: int, problem: str
) -> None:
    good = event_columns([_event("e1", "ann"), _event("e2", "bob")])
    column = getattr(good, field).copy()
    column[1] = value
    with pytest.raises(ValueError, match=problem):
        store.add_event_columns(replace(good, **{field: column}))
    assert store.daily_usage("acme", JAN) == []  # nothing of the batch is written


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("period_start", DAY_ZERO, DATES_KEPT),
        ("period_start", AFTER_DATE, DATES_KEPT),
        ("first_time", BEFORE_1970, "DateTime's range"),
        ("first_time", AFTER_DATETIME, "DateTime's range"),
    ],
)
def test_active_user_columns_outside_the_engines_ranges_are_rejected(
    store: Store, field: str, value: int, problem: str
) -> None:
    good = user_columns([user_row("u1"), user_row("u2")])
    column = getattr(good, field).copy()
    column[0] = value
    with pytest.raises(ValueError, match=problem):
        store.add_active_user_columns(replace(good, **{field: column}))
    assert store.mau("acme", JAN) == 0


def test_the_ranges_ends_are_kept(store: Store) -> None:
    last_second = datetime(2106, 2, 7, 6, 28, 15, tzinfo=UTC)
    first_second = datetime(1970, 1, 1, tzinfo=UTC)
    store.add_active_user_columns(
        user_columns([user_row("u1", at=last_second), user_row("u2", at=first_second)])
    )
    assert [row.first_time for row in store.active_users("acme", JAN)] == [
        last_second, first_second
    ]
    # The first and last days kept read back as written, as days, periods and invoice dates.
    for day in (FIRST_KEPT, LAST_KEPT):
        store.add_events([_event(f"e-{day}", "ann", day=day)._replace(period_start=day)])
        assert store.daily_usage("acme", day) == [DailyUsage(day, "login", 1, 1)]
        store.add_active_users([user_row("ann", period=day)])
        assert [row.period_start for row in store.active_users("acme", day)] == [day]
    store.add_invoices([StoredInvoice("acme", FIRST_KEPT, "first"),
                        StoredInvoice("acme", LAST_KEPT, "last")])
    assert [(inv.invoice_date, inv.body) for inv in store.invoices("acme")] == [
        (FIRST_KEPT, "first"), (LAST_KEPT, "last")]


def test_rows_outside_the_days_kept_are_rejected(store: Store) -> None:
    with pytest.raises(ValueError, match=DATES_KEPT):
        store.add_events([_event("e1", "ann", day=date(1970, 1, 1))])
    with pytest.raises(ValueError, match=DATES_KEPT):
        store.add_active_users([user_row("u1", period=date(2106, 1, 1))])
    with pytest.raises(ValueError, match=DATES_KEPT):
        store.add_invoices([StoredInvoice("acme", date(2149, 6, 6), "wrapped round")])
    with pytest.raises(ValueError, match="outside DateTime's range"):
        store.add_active_users([user_row("u1", at=datetime(1969, 12, 31, tzinfo=UTC))])
    assert store.daily_usage("acme", JAN) == []
    assert store.mau("acme", JAN) == 0
    assert store.invoices() == []


def test_columns_of_different_lengths_are_rejected(store: Store) -> None:
    good = user_columns([user_row("u1"), user_row("u2")])
    with pytest.raises(ValueError, match="same length"):
        store.add_active_user_columns(replace(good, user_id=["u1"]))
    with pytest.raises(ValueError, match="same length"):
        store.add_event_columns(replace(event_columns([_event("e1", "ann")]), time=seconds([])))
    assert store.mau("acme", JAN) == 0


_users = st.one_of(st.sampled_from(AWKWARD_IDS), st.text(st.characters(codec="utf-8"), max_size=6))


@st.composite
def _batches(draw: st.DrawFn) -> list[list[ActiveUserRow]]:
    distinct = draw(
        st.lists(
            st.builds(
                lambda user, offset, event: user_row(
                    user, at=T0 + timedelta(seconds=offset), event=event
                ),
                _users,
                st.integers(0, 3),
                st.sampled_from(["a", "b", "c"]),
            ),
            max_size=25,
        )
    )
    repeated = draw(st.lists(st.sampled_from(distinct), max_size=10)) if distinct else []
    rows = draw(st.permutations(distinct + repeated))
    cuts = sorted(draw(st.lists(st.integers(0, len(rows)), max_size=3)))
    bounds = [0, *cuts, len(rows)]
    return [rows[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(batches=_batches(), columns_first=st.booleans())
def test_mau_and_first_events_match_a_python_model(
    store: Store, merge: Merge, batches: list[list[ActiveUserRow]], columns_first: bool
) -> None:
    """Batches go in through columns and rows in turn."""
    team = uuid.uuid4().hex
    first: dict[str, ActiveUserRow] = {}
    for i, batch in enumerate(batches):
        rows = [row._replace(team=team) for row in batch]
        if (i % 2 == 0) == columns_first:
            store.add_active_user_columns(user_columns(rows))
        else:
            store.add_active_users(rows)
        for row in rows:
            best = first.get(row.user_id)
            if best is None or (row.first_time, row.event_id) < (best.first_time, best.event_id):
                first[row.user_id] = row
    expected = [first[user] for user in sorted(first)]
    assert store.mau(team, JAN) == len(first)
    assert store.active_users(team, JAN) == expected
    merge()
    assert store.mau(team, JAN) == len(first)
    assert store.active_users(team, JAN) == expected


def test_invoices_of_an_older_table_are_migrated_with_their_usage(bare_store: Store) -> None:
    """A store made before invoices kept `usage` beside the body: ensure_schema keeps the old
    table as invoices_v1 and copies each invoice, same bytes, its usage read from the body."""
    if not isinstance(bare_store, SqlStore) or isinstance(bare_store, ClusterStore):
        return  # nothing outlives a memory store; a cluster starts with today's tables
    body = ('{"team":"acme","invoice_date":"2024-02-01","usage":[{"period_start":'
            '"2024-01-01","period_end":"2024-02-01","active_users":7}]}')
    sql = bare_store._sql  # noqa: SLF001 - the statements of this very store
    bare_store._execute(sql.schema[0])  # noqa: SLF001
    bare_store._execute(  # noqa: SLF001
        f"CREATE TABLE {bare_store.database}.invoices (team String, invoice_date Date, "
        "reference String, body String, issued_at DateTime('UTC') DEFAULT now()) "
        "ENGINE = ReplacingMergeTree() ORDER BY (team, invoice_date, reference, issued_at, body)")
    insert = (f"INSERT INTO {bare_store.database}.invoices (team, invoice_date, reference, "  # noqa: S608
              "body) SELECT %(team)s, %(day)s, '', %(body)s")
    bare_store._execute_with(insert, {"team": "acme", "day": FEB, "body": body})  # noqa: SLF001
    bare_store.ensure_schema()
    bare_store.ensure_schema()
    (migrated,) = bare_store.invoices()
    assert (migrated.key, migrated.body) == (InvoiceKey("acme", FEB, ""), body)
    assert migrated.usage == (_usage(JAN, FEB, 7),)
    assert bare_store.billed_usage("acme", "acme") == [PeriodCount("acme", JAN, 7, FEB)]


def _period_event(team: str, period: date, event_id: str, user: str) -> EventRow:
    return EventRow(team=team, period_start=period, day=period, event_type="login",
                    source="web", event_id=event_id, user_id=user,
                    time=datetime.combine(period, T0.timetz()))


def test_dropping_months_removes_the_raw_events_of_their_periods_only(
    store: Store, merge: Merge
) -> None:
    mar = date(2024, 3, 1)
    rows = [
        _period_event("acme", JAN, "a1", "ann"), _period_event("acme", JAN, "a2", "bob"),
        _period_event("beta", JAN, "b1", "cat"), _period_event("acme", FEB, "a3", "ann"),
        _period_event("acme", mar, "a4", "ann"),
    ]
    store.add_events(rows)
    store.add_active_users([
        user_row(row.user_id, team=row.team, period=row.period_start, event=row.event_id)
        for row in rows
    ])
    merge()
    assert store.event_periods(mar) == [("acme", JAN), ("acme", FEB), ("beta", JAN)]
    assert store.event_periods(JAN) == []
    store.drop_event_months([202401])
    assert store.event_periods(mar) == [("acme", FEB)]
    assert store.daily_usage("acme", JAN) == []
    assert store.daily_usage("beta", JAN) == []
    assert [usage.events for usage in store.daily_usage("acme", FEB)] == [1]
    # first-seen users stay: the period's count is kept
    assert (store.mau("acme", JAN), store.mau("beta", JAN)) == (2, 1)
    store.drop_event_months([202401, 209912])  # gone already, never there: nothing happens
    merge()
    assert store.event_periods(date(2024, 4, 1)) == [("acme", FEB), ("acme", mar)]
