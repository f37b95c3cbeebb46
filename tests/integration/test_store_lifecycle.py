"""Payment outcomes, published notices and the deletion of a team's usage on the ClickHouse
server (18.16) and on chdb: one store per engine for the module, each test on its own teams."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from aggregation import (
    ActiveUserColumns,
    EventColumns,
    StoredChange,
    StoredInvoice,
    StoredNotice,
    StoredPayment,
    open_store,
)
from aggregation._schema import SqlStore
from aggregation.store import day_number
from tests.conftest import engine_url
from tests.store_contract import optimize

pytestmark = pytest.mark.integration

JAN = date(2026, 1, 4)
T0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module", params=["server", "cluster", "chdb"])
def store(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqlStore]:
    """One store per engine for the whole module (the server and cluster are the
    session's)."""
    opened = open_store(engine_url(request, "lifecycle",
                                   tmp_path_factory.mktemp("lifecycle") / "chdb"))
    assert isinstance(opened, SqlStore)
    try:
        opened.ensure_schema()
        yield opened
    finally:
        opened.close()


def merge(store: SqlStore, table: str) -> None:
    optimize(store, table)


def usage(store: SqlStore, team: str, users: list[str]) -> None:
    """One event and one first-seen row per user, written as the worker writes them."""
    count = len(users)
    day = np.full(count, day_number(JAN), dtype=np.int32)
    times = np.full(count, int(T0.timestamp()), dtype=np.int64)
    ids = [f"ev-{user}" for user in users]
    store.add_event_columns(EventColumns(
        team=[team] * count, period_start=day, day=day + 1, event_type=["login"] * count,
        source=["web"] * count, event_id=ids, user_id=users, time=times))
    store.add_active_user_columns(ActiveUserColumns(
        team=[team] * count, period_start=day, user_id=users, first_time=times,
        event_id=ids, source=["web"] * count, event_type=["login"] * count))


def rows_of(store: SqlStore, team: str) -> list[int]:
    """The team's rows as stored in events and active_users, whatever the merge state."""
    return [
        int(store._select(f"SELECT count() FROM {store.database}.{table} "  # noqa: S608
                          "WHERE team = %(team)s", {"team": team})[0][0])
        for table in ("events", "active_users")
    ]


def test_payments_round_trip_once_each(store: SqlStore) -> None:
    later = StoredPayment("pay-a", "stripe", "p2", T0 + timedelta(days=3),
                          '{"type": "payment_succeeded", "note": "it\'s \\\\ é"}')
    earlier = StoredPayment("pay-a", "stripe", "p9", T0, '{"type": "payment_failed"}')
    same_time = StoredPayment("pay-a", "adyen", "p1", T0, "{}")
    other = StoredPayment("pay-b", "stripe", "p1", T0 - timedelta(days=1), "{}")
    store.add_payments([later, earlier, other])
    store.add_payments([later, earlier, same_time])  # a redelivery
    for merged in (False, True):
        if merged:
            merge(store, "billing_payments")
        assert store.payments("pay-a") == [same_time, earlier, later]
        assert store.payments_between("pay-a", "pay-b") == [same_time, earlier, later, other]
        assert store.payments("pay-c") == []


def test_a_payment_resent_with_another_body_reads_back_once(store: SqlStore) -> None:
    first = StoredPayment("resent", "stripe", "p1", T0, '{"attempt": 1}')
    store.add_payments([first])
    store.add_payments([replace(first, time=T0 + timedelta(hours=1), body='{"attempt": 2}')])
    # the earlier insert's form (and within one second of it, the smaller body): the first
    for merged in (False, True):
        if merged:
            merge(store, "billing_payments")
        assert store.payments("resent") == [first]


def test_notices_round_trip_once_each_with_their_ids(store: SqlStore) -> None:
    retry = StoredNotice("note-a", "note-a/payment_retry_due/2026-01-13", T0 + timedelta(days=3),
                         '{"type": "payment_retry_due"}')
    failed = StoredNotice("note-a", "note-a/payment_failed_notice/2026-01-10", T0, "{}")
    quoted = StoredNotice("note-b'); --", "%(team)s", T0, '{"x": "\\n"}')
    store.add_notices([retry, failed])
    store.add_notices([failed, quoted, retry])  # a rerun
    for merged in (False, True):
        if merged:
            merge(store, "billing_notices")
        assert store.notices("note-a") == [failed, retry]
        assert store.notices(quoted.team) == [quoted]
        assert store.notice_ids(["note-a", quoted.team, "note-c"]) == {
            ("note-a", failed.notice_id), ("note-a", retry.notice_id),
            (quoted.team, quoted.notice_id)}
        assert store.notice_ids([quoted.team]) == {(quoted.team, quoted.notice_id)}
        assert store.notice_ids([]) == set()


def test_delete_usage_removes_that_teams_rows_only(store: SqlStore) -> None:
    gone, kept = "del-it's \\ é", "del-kept"
    usage(store, gone, ["u1", "u2", "u3"])
    usage(store, gone, ["u4"])  # a second part of each table
    usage(store, kept, ["u1", "k2"])
    invoice = StoredInvoice(gone, JAN, '{"total": "10.00"}')
    change = StoredChange(gone, "crm", "c1", T0, "{}")
    paid = StoredPayment(gone, "stripe", "p1", T0, "{}")
    published = StoredNotice(gone, "n1", T0, "{}")
    store.add_invoices([invoice])
    store.add_changes([change])
    store.add_payments([paid])
    store.add_notices([published])
    before = (store.active_users(kept, JAN), store.daily_usage(kept, JAN), store.mau(kept, JAN))

    assert store.delete_usage(gone) == 4 + 4

    assert rows_of(store, gone) == [0, 0]
    assert store.mau(gone, JAN) == 0
    assert store.daily_usage(gone, JAN) == []
    assert rows_of(store, kept) == [2, 2]
    assert (store.active_users(kept, JAN), store.daily_usage(kept, JAN),
            store.mau(kept, JAN)) == before
    assert (store.invoices(gone), store.changes(gone), store.payments(gone),
            store.notices(gone)) == ([invoice], [change], [paid], [published])
    assert store.delete_usage(gone) == 0


def test_ensure_schema_adds_the_new_tables_to_an_existing_store(store: SqlStore) -> None:
    for table in ("billing_payments", "billing_notices"):
        store._execute(f"DROP TABLE {store.database}.{table}")
    store.ensure_schema()
    store.ensure_schema()
    store.add_payments([StoredPayment("schema-a", "stripe", "p1", T0, "{}")])
    store.add_notices([StoredNotice("schema-a", "n1", T0, "{}")])
    assert [p.payment_id for p in store.payments("schema-a")] == ["p1"]
    assert store.notice_ids(["schema-a"]) == {("schema-a", "n1")}
