"""The derived lifecycle state (invoicing/lifecycle.py): seed 000's dunning, terms, deletion."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from invoicing.lifecycle import team_lifecycle
from schemas import (
    BillingChange,
    Catalog,
    Invoice,
    PaymentEvent,
    parse_catalog,
)

CATALOG = parse_catalog("""
plans:
  power: {name: Power, currency: USD, base_fee: "10.00", included_users: 5, overage_price: "2.00"}
dunning:
  lenient: {retry_days: [2], suspend_after_failures: 2, pause_after_days: 1, retention_days: 3}
accounts:
  - {team: team-acme, plan: power, start_date: 2026-07-04}
  - {team: team-po, plan: power, start_date: 2026-07-04, payment_terms: NET 30}
  - {team: team-easy, plan: power, start_date: 2026-07-04, dunning: lenient}
""")


def _account(catalog: Catalog, team: str):  # type: ignore[no-untyped-def]
    account = catalog.account(team)
    assert account is not None
    return account


def _invoice(team: str, day: date, total: str, *, due: date | None = None) -> Invoice:
    return Invoice(team=team, invoice_date=day, currency="USD", lines=(), subtotal=total,
                   tax="0.00", total=total, payment_terms=None if due is None else "NET 30",
                   due_date=due)


def _payment(kind: str, at: datetime, *, pid: str, attempt: int = 1, amount: str = "66.00",
             team: str = "team-acme", day: date = date(2026, 8, 4)) -> PaymentEvent:
    data: dict[str, object] = {}
    if kind != "payment_method_updated":
        data = {"invoice": {"invoice_date": day.isoformat()}, "attempt": attempt,
                "amount": amount, "currency": "USD"}
    return PaymentEvent.model_validate({
        "specversion": "1.0", "id": pid, "source": "stripe", "type": kind,
        "time": at.isoformat().replace("+00:00", "Z"), "subject": team, "data": data})


AUG4 = datetime(2026, 8, 4, 0, 5, tzinfo=UTC)
INVOICE = _invoice("team-acme", date(2026, 8, 4), "66.00")
# The first charge and the processor's three retries (Stripe's schedule: days 3, 5, 7) fail.
FAILURES = [_payment("payment_failed", AUG4 + timedelta(days=d), pid=f"f{n}", attempt=n)
            for n, d in ((1, 0), (2, 3), (3, 5), (4, 7))]


def _life(now: datetime, payments: list[PaymentEvent], *, team: str = "team-acme",
          invoices: tuple[Invoice, ...] = (INVOICE,), changes: tuple[BillingChange, ...] = ()):  # type: ignore[no-untyped-def]
    return team_lifecycle(_account(CATALOG, team), CATALOG, invoices=invoices,
                          payments=payments, changes=changes, now=now)


def test_a_paid_team_is_active_and_may_log_in() -> None:
    paid = _payment("payment_succeeded", AUG4, pid="p1")
    life = _life(AUG4 + timedelta(days=40), [paid])
    assert (life.access.state, life.access.login_allowed, life.notices) == ("active", True, ())


def test_first_failure_is_past_due_with_an_email_and_the_retry_schedule() -> None:
    life = _life(AUG4 + timedelta(days=4), FAILURES[:2])
    assert (life.access.state, life.access.login_allowed) == ("past_due", True)
    assert [(n.type, n.time, n.data.attempt) for n in life.notices] == [
        ("payment_failed_notice", AUG4, None),
        ("payment_retry_due", AUG4 + timedelta(days=3), 2),
    ]
    assert life.notices[0].id == "team-acme/payment_failed_notice/2026-08-04//2026-08-04T00:05:00Z"


def test_four_failures_suspend_then_pause_then_archive_and_nothing_is_deleted() -> None:
    now = AUG4 + timedelta(days=7 + 14 + 90)
    life = _life(now, FAILURES)
    steps = [(n.type, n.time) for n in life.notices if not n.type.startswith("payment")]
    assert steps == [
        ("team_suspended", AUG4 + timedelta(days=7)),
        ("team_paused", AUG4 + timedelta(days=21)),
        ("team_archived", AUG4 + timedelta(days=111)),
    ]
    assert (life.access.state, life.access.login_allowed) == ("archived", False)
    # Paused at 00:05 on 25 August: the invoice of 25 August had arisen; from the 26th none.
    assert life.not_invoiced == ((date(2026, 8, 26), None),)
    assert life.delete_at is None


def test_suspended_denies_login_until_a_payment_settles_the_invoice() -> None:
    suspended = _life(AUG4 + timedelta(days=8), FAILURES)
    assert (suspended.access.state, suspended.access.login_allowed) == ("suspended", False)
    assert suspended.access.why == "4 failed payments of the invoice of 2026-08-04"
    paid = _payment("payment_succeeded", AUG4 + timedelta(days=30), pid="p9", attempt=5)
    life = _life(AUG4 + timedelta(days=60), [*FAILURES, paid])
    assert (life.access.state, life.access.login_allowed) == ("active", True)
    assert life.access.since == paid.time
    assert [n.type for n in life.notices][-2:] == ["team_paused", "team_reactivated"]
    assert life.not_invoiced == ((date(2026, 8, 26), date(2026, 9, 4)),)


def test_payment_terms_start_dunning_at_the_due_date() -> None:
    invoice = _invoice("team-po", date(2026, 8, 4), "66.00", due=date(2026, 9, 3))
    before = _life(datetime(2026, 9, 2, tzinfo=UTC), [], team="team-po", invoices=(invoice,))
    assert before.access.state == "active"
    during = _life(datetime(2026, 9, 3, 23, tzinfo=UTC), [], team="team-po",
                   invoices=(invoice,))
    assert during.access.state == "active"  # a payment on its due date is on time
    due = datetime(2026, 9, 4, tzinfo=UTC)  # unpaid at the end of 3 September
    life = _life(due + timedelta(days=7, hours=1), [], team="team-po", invoices=(invoice,))
    assert [(n.type, n.time) for n in life.notices] == [
        ("payment_failed_notice", due),
        ("payment_retry_due", due + timedelta(days=3)),
        ("payment_retry_due", due + timedelta(days=5)),
        ("payment_retry_due", due + timedelta(days=7)),
        ("team_suspended", due + timedelta(days=7)),
    ]


def test_a_declined_card_on_a_terms_account_does_not_start_dunning_before_the_due_date() -> None:
    invoice = _invoice("team-po", date(2026, 8, 4), "66.00", due=date(2026, 9, 3))
    declined = _payment("payment_failed", AUG4, pid="x", team="team-po")
    life = _life(datetime(2026, 8, 20, tzinfo=UTC), [declined], team="team-po",
                 invoices=(invoice,))
    assert (life.access.state, life.notices) == ("active", ())


def test_the_accounts_own_policy_applies() -> None:
    invoice = _invoice("team-easy", date(2026, 8, 4), "66.00")
    fails = [_payment("payment_failed", AUG4 + timedelta(days=d), pid=f"e{d}", attempt=n,
                      team="team-easy") for n, d in ((1, 0), (2, 2))]
    life = _life(AUG4 + timedelta(days=2 + 1 + 3), fails, team="team-easy", invoices=(invoice,))
    assert [n.type for n in life.notices if n.type.startswith("team")] == [
        "team_suspended", "team_paused", "team_archived"]


def test_a_new_card_asks_for_a_retry_at_once() -> None:
    updated = _payment("payment_method_updated", AUG4 + timedelta(days=1), pid="m1")
    life = _life(AUG4 + timedelta(days=2), [FAILURES[0], updated])
    assert [(n.type, n.data.attempt) for n in life.notices] == [
        ("payment_failed_notice", None), ("payment_retry_due", 2)]


def test_delete_requested_takes_effect_after_the_grace() -> None:
    change = BillingChange.model_validate({
        "specversion": "1.0", "id": "d1", "source": "crm", "type": "delete_requested",
        "time": "2026-09-01T12:00:00Z", "subject": "team-acme", "data": {"by": "ann"}})
    paid = _payment("payment_succeeded", AUG4, pid="p1")
    waiting = _life(datetime(2026, 9, 8, 11, tzinfo=UTC), [paid], changes=(change,))
    assert waiting.access.state == "active"
    assert waiting.delete_at == datetime(2026, 9, 8, 12, tzinfo=UTC)
    life = _life(datetime(2026, 9, 9, tzinfo=UTC), [paid], changes=(change,))
    assert (life.access.state, life.access.login_allowed) == ("deleted", False)
    assert life.notices[-1].type == "team_deleted"
    # Deleted is final: a later failure or payment changes nothing.
    late = [_payment("payment_failed", datetime(2026, 9, 10, tzinfo=UTC), pid="x1"),
            _payment("payment_succeeded", datetime(2026, 9, 11, tzinfo=UTC), pid="x2")]
    after = _life(datetime(2026, 10, 1, tzinfo=UTC), [paid, *late], changes=(change,))
    assert (after.access.state, after.notices) == ("deleted", life.notices)


@settings(max_examples=30, deadline=None)
@given(st.permutations(range(len(FAILURES) + 1)), st.integers(0, 200))
def test_replay_is_a_function_of_the_inputs_not_their_order(order: list[int], days: int
                                                            ) -> None:
    """Shuffled payments (and the same run twice) give the same state and notices."""
    paid = _payment("payment_succeeded", AUG4 + timedelta(days=30), pid="p9", attempt=5)
    payments = [*FAILURES, paid]
    shuffled = [payments[index] for index in order]
    now = AUG4 + timedelta(days=days)
    once = _life(now, sorted(payments, key=lambda p: p.time))
    again = _life(now, shuffled)
    assert once == again
    assert len({n.id for n in once.notices}) == len(once.notices)
