"""Payment outcomes, published notices and the deletion of a team's usage in the in-memory
store; and the engines' shared logic of those (notice ids by range, waiting for a deletion)
over a scripted engine, without a server."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from aggregation import (
    ActiveUserRow,
    EventRow,
    MemoryStore,
    StoredChange,
    StoredInvoice,
    StoredNotice,
    StoredPayment,
    StoreError,
)
from aggregation._schema import Column, Param, Row, SqlStore
from schemas import InvoiceRef, Notice, NoticeData, PaymentEvent

JAN = date(2026, 1, 4)
FEB = date(2026, 2, 4)
T0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


def payment(ident: str, at: datetime = T0, *, team: str = "acme", source: str = "stripe",
            body: str = "{}") -> StoredPayment:
    return StoredPayment(team=team, source=source, payment_id=ident, time=at, body=body)


def notice(ident: str, at: datetime = T0, *, team: str = "acme", body: str = "{}"
           ) -> StoredNotice:
    return StoredNotice(team=team, notice_id=ident, time=at, body=body)


def user(team: str, user_id: str, period: date = JAN) -> ActiveUserRow:
    return ActiveUserRow(team, period, user_id, T0, f"ev-{user_id}", "web", "login")


def event(team: str, ident: str, user_id: str, period: date = JAN) -> EventRow:
    return EventRow(team, period, period + timedelta(days=1), "login", "web", ident, user_id,
                    T0)


@pytest.fixture
def store() -> MemoryStore:
    memory = MemoryStore()
    memory.ensure_schema()
    return memory


def test_a_payment_outcome_is_kept_as_decoded() -> None:
    decoded = PaymentEvent.model_validate_json(
        '{"specversion": "1.0", "id": "pay-41", "source": "stripe", "type": "payment_failed",'
        ' "time": "2026-08-04T02:05:00+02:00", "subject": "team-acme",'
        ' "data": {"invoice": {"invoice_date": "2026-08-04", "reference": ""}, "attempt": 1,'
        ' "amount": "66.00", "currency": "USD", "failure": "card_declined"}}')
    stored = StoredPayment.of(decoded)
    assert (stored.team, stored.source, stored.payment_id) == ("team-acme", "stripe", "pay-41")
    assert stored.time == datetime(2026, 8, 4, 0, 5, tzinfo=UTC)
    assert stored.body == decoded.model_dump_json()
    assert stored.payment() == decoded


def test_a_notice_is_kept_as_published() -> None:
    published = Notice(
        id="team-acme/team_suspended/2026-08-11T00:05:00Z", type="team_suspended",
        time=datetime(2026, 8, 11, 0, 5, tzinfo=UTC), subject="team-acme",
        data=NoticeData(state="suspended", reason="4 failed payments",
                        invoice=InvoiceRef(invoice_date=date(2026, 8, 4))))
    stored = StoredNotice.of(published)
    assert (stored.team, stored.notice_id) == ("team-acme", published.id)
    assert stored.notice() == published


def test_payments_round_trip_once_each_in_time_order(store: MemoryStore) -> None:
    later = payment("pay-2", T0 + timedelta(days=3), body='{"type": "payment_succeeded"}')
    earlier = payment("pay-9", T0, body='{"note": "it\'s \\\\ é"}')
    same_time = payment("pay-1", T0, source="adyen")
    store.add_payments([later, earlier])
    store.add_payments([later, replace(earlier, body="{}"), same_time])  # a redelivery
    store.add_payments([])
    assert store.payments("acme") == [same_time, earlier, later]
    assert store.payments("globex") == []


def test_payment_times_are_kept_in_whole_utc_seconds(store: MemoryStore) -> None:
    berlin = timezone(timedelta(hours=1))
    store.add_payments([payment("p", datetime(2026, 1, 10, 13, 0, 0, 900_000, tzinfo=berlin))])
    assert store.payments("acme")[0].time == T0
    with pytest.raises(ValueError, match="timezone-aware"):
        store.add_payments([payment("naive", datetime(2026, 1, 10))])
    assert [p.payment_id for p in store.payments("acme")] == ["p"]


def test_payments_between_come_team_by_team_in_byte_order(store: MemoryStore) -> None:
    acme = payment("a", T0)
    globex = payment("g", T0 - timedelta(days=1), team="globex")
    accented = payment("é", T0, team="équipe")  # sorts after every ASCII team
    store.add_payments([accented, globex, payment("z", T0, team="zeta"), acme])
    assert store.payments_between("acme", "globex") == [acme, globex]
    assert store.payments_between("zeta", "\U0010ffff") == [
        payment("z", T0, team="zeta"), accented]
    assert store.payments_between("b", "c") == []


def test_notices_round_trip_once_each_in_time_order(store: MemoryStore) -> None:
    suspended = notice("acme/team_suspended/2026-01-20", T0 + timedelta(days=10))
    failed = notice("acme/payment_failed_notice/2026-01-10", T0)
    retry = notice("acme/payment_retry_due/2026-01-10", T0)
    store.add_notices([suspended, failed])
    store.add_notices([suspended, replace(failed, body='{"again": 1}'), retry])
    store.add_notices([])
    assert store.notices("acme") == [failed, retry, suspended]
    assert store.notices("globex") == []


def test_notice_ids_are_the_pairs_of_the_teams_asked_about(store: MemoryStore) -> None:
    store.add_notices([notice("n1"), notice("n2"), notice("n1", team="b-team"),
                       notice("n3", team="globex"), notice("n1", team="zeta")])
    assert store.notice_ids(["acme", "globex"]) == {
        ("acme", "n1"), ("acme", "n2"), ("globex", "n3")}
    assert store.notice_ids(["zeta", "zeta", "nobody"]) == {("zeta", "n1")}
    assert store.notice_ids([]) == set()


def test_delete_usage_removes_only_that_teams_usage(store: MemoryStore) -> None:
    store.add_active_users([user("acme", "u1"), user("acme", "u2"), user("acme", "u1", FEB),
                            user("globex", "u1"), user("globex", "g2")])
    store.add_events([event("acme", "e1", "u1"), event("acme", "e2", "u2"),
                      event("acme", "e3", "u1", FEB), event("globex", "e1", "u1")])
    invoice = StoredInvoice("acme", FEB, '{"total": "10.00"}')
    change = StoredChange("acme", "crm", "c1", T0, "{}")
    store.add_invoices([invoice])
    store.add_changes([change])
    store.add_payments([payment("p1")])
    store.add_notices([notice("n1")])
    globex = (store.active_users("globex", JAN), store.daily_usage("globex", JAN),
              store.mau("globex", JAN))

    assert store.delete_usage("acme") == 3 + 3

    assert store.mau("acme", JAN) == store.mau("acme", FEB) == 0
    assert store.active_users("acme", JAN) == []
    assert store.daily_usage("acme", JAN) == store.daily_usage("acme", FEB) == []
    assert store.period_mau("acme", "acme") == []
    assert (store.active_users("globex", JAN), store.daily_usage("globex", JAN),
            store.mau("globex", JAN)) == globex
    assert [count.team for count in store.period_mau("a", "z")] == ["globex"]
    # the financial record stays
    assert store.invoices("acme") == [invoice]
    assert store.changes("acme") == [change]
    assert store.payments("acme") == [payment("p1")]
    assert store.notices("acme") == [notice("n1")]
    # nothing left to remove; a team never seen has nothing either
    assert store.delete_usage("acme") == 0
    assert store.delete_usage("nobody") == 0
    # metering goes on: the team's new usage counts from zero
    store.add_active_users([user("acme", "u1")])
    assert store.mau("acme", JAN) == 1


def test_lifecycle_calls_need_the_schema() -> None:
    memory = MemoryStore()
    for call in (lambda: memory.add_payments([payment("p")]), lambda: memory.payments("acme"),
                 lambda: memory.add_notices([notice("n")]), lambda: memory.notices("acme"),
                 lambda: memory.notice_ids(["acme"]), lambda: memory.delete_usage("acme")):
        with pytest.raises(StoreError, match="no schema"):
            call()


class ScriptedEngine(SqlStore):
    """An engine that answers queries from a script: each query's text names the answer
    (the first key found in it), counts pop their next value; every statement is kept."""

    def __init__(self, answers: Mapping[str, list[list[Row]]]) -> None:
        super().__init__("lifecycle")
        self.answers = {key: list(values) for key, values in answers.items()}
        self.ran: list[tuple[str, Mapping[str, Param]]] = []

    def _execute(self, sql: str) -> None:
        self.ran.append((sql, {}))

    def _execute_with(self, sql: str, params: Mapping[str, Param]) -> None:
        self.ran.append((sql, dict(params)))

    def _select(self, sql: str, params: Mapping[str, Param]) -> list[Row]:
        self.ran.append((sql, dict(params)))
        for key, values in self.answers.items():
            if key in sql:
                return values.pop(0) if len(values) > 1 else values[0]
        raise AssertionError(f"no answer scripted for {sql}")

    def _insert(self, sql: str, rows: Sequence[tuple[Param, ...]]) -> None:
        raise AssertionError("no inserts here")

    def _insert_columns(self, sql: str, columns: Sequence[Column]) -> None:
        raise AssertionError("no inserts here")

    def close(self) -> None:
        """Nothing open."""

    def statements(self, word: str) -> list[tuple[str, Mapping[str, Param]]]:
        return [(sql, params) for sql, params in self.ran if word in sql]


def test_notice_ids_ask_one_range_whatever_the_number_of_teams() -> None:
    engine = ScriptedEngine({"billing_notices": [[
        ("t0001", "n1"), ("t0002", "n1"), ("t0500", "n7"), ("t9999", "n2")]]})
    teams = [f"t{number:04d}" for number in range(9999, 0, -2)]  # odd numbers only
    assert engine.notice_ids(teams) == {("t0001", "n1"), ("t9999", "n2")}
    [(_, params)] = engine.ran
    assert params == {"first": "t0001", "last": "t9999"}
    assert ScriptedEngine({}).notice_ids([]) == set()  # no query: no answer was scripted


def test_delete_usage_waits_for_the_engine_to_finish() -> None:
    engine = ScriptedEngine({
        "FROM lifecycle.events": [[(4,)]],
        "FROM lifecycle.active_users": [[(0,)]],
        "FROM lifecycle.ledger": [[(0,)]],
        "system.mutations": [[(1,)], [(1,)], [(0,)]],  # done at the third look
    })
    engine.delete_wait_seconds = 60.0
    assert engine.delete_usage("it's") == 4
    [(delete, params)] = engine.statements("ALTER TABLE")
    assert delete.strip() == "ALTER TABLE lifecycle.events DELETE WHERE team = %(team)s"
    assert params == {"team": "it's"}
    looks = engine.statements("system.mutations")
    assert [params for _, params in looks] == [{"database": "lifecycle", "table": "events"}] * 3


def test_delete_usage_with_nothing_stored_changes_nothing() -> None:
    engine = ScriptedEngine({"SELECT count() FROM lifecycle": [[(0,)]]})
    assert engine.delete_usage("acme") == 0
    assert engine.statements("ALTER") == engine.statements("system.mutations") == []


def test_a_deletion_that_never_finishes_is_a_store_error() -> None:
    engine = ScriptedEngine({"system.mutations": [[(1,)]], "SELECT count()": [[(2,)]]})
    engine.delete_wait_seconds = 0.0
    with pytest.raises(StoreError, match=r"lifecycle.events: deleting rows did not finish "
                                         r"within 0 s \(timeout\)"):
        engine.delete_usage("acme")
    assert len(engine.statements("ALTER TABLE")) == 3  # every usage table was asked to delete
