"""A team's lifecycle state, derived, never stored (seed 000 "What happens when a payment
fails", "Canceling"; seed 003 "Caveats"; README "Account lifecycle").

`team_lifecycle` is a pure function of the team's invoices, payment outcomes, billing
changes, its subscription's status steps (tier plans: invoicing/schedule.py
`tier_timeline`), the catalog's dunning policy and the time. It replays them in time order
and gives the state now, every notice due by now, the local dates on which the team is not
invoiced, and when its usage is to be deleted.

Dunning (policy: `schemas.DunningPolicy`):

- An invoice is *open* from its first failure until payments of its total have succeeded.
  A card account's first failure is the processor's first `payment_failed`; an account with
  payment terms (NET 30) has its first failure at the end of its due date (local), unpaid
  (a card declined before the due date starts nothing: seed 000's invoiced billing).
- The first failure of each invoice sends `payment_failed_notice` ("an email asking you to
  update the payment method") and makes an active team `past_due`. The policy's retry days
  count from it: at each, while the invoice is open, `payment_retry_due` tells the payment
  adapter to retry (attempt 2, 3, ...). A card account's failures are the processor's
  reports; an account on terms has no card to retry, so each retry day passing unpaid counts
  as its failure. `payment_method_updated` asks for a retry of every open invoice at once.
- `suspend_after_failures` failures of one open invoice suspend the team (login denied);
  `pause_after_days` later, still unsettled, it is paused (not invoiced); `retention_days`
  after that, archived. Nothing is deleted in any of these states.
- A payment that settles the last open invoice returns the team to active
  (`team_reactivated`), from any of them.

Subscription steps (tier plans): cancelled on the cancel day (login allowed, benefits to the
end of the paid term), then paused at the term's end (plan setting `after_cancel: pause`,
seed 000) and archived after the retention, or active on the free plan (seed 003); resumed:
active. A takeover's paused billing (seed 003) leaves the team active, with
`billing_paused_until`.

Deletion: a `delete_requested` change takes effect `delete_grace_days` after it: the team
is `deleted` (final), and the close removes its usage (invoicing never reads it again).

Where both tracks say something, the graver state wins, in the order of `_GRAVITY`. Each
change of the team's state is one notice, named by the team, the step and its moment, so a
rerun derives the same notices with the same ids.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Final, Protocol

from schemas import (
    LOGIN_DENIED,
    Account,
    BillingCalendar,
    BillingChange,
    Catalog,
    DunningPolicy,
    Invoice,
    InvoiceRef,
    Notice,
    NoticeData,
    NoticeType,
    PaymentEvent,
    TeamState,
)

__all__ = [
    "Access",
    "Lifecycle",
    "StatusStep",
    "team_lifecycle",
]

InvoiceKey = tuple[date, str]  # invoice date, reference
Window = tuple[date, date | None]  # local dates [from, to), to None: still open

# Graver first: the state shown when the dunning and subscription tracks disagree.
_GRAVITY: Final[tuple[TeamState, ...]] = (
    "deleted", "archived", "paused", "suspended", "past_due", "cancelled", "active",
)
_NOTICE_OF: Final[dict[TeamState, NoticeType]] = {
    "past_due": "payment_failed_notice", "suspended": "team_suspended",
    "paused": "team_paused", "archived": "team_archived", "active": "team_reactivated",
    "cancelled": "team_cancelled", "deleted": "team_deleted",
}
NOT_INVOICED: Final[frozenset[TeamState]] = frozenset({"paused", "archived", "deleted"})


class StatusStep(Protocol):
    """One step of a tier subscription's status (invoicing/schedule.py TierStatus)."""

    @property
    def at(self) -> date: ...

    @property
    def status(self) -> str: ...

    @property
    def reason(self) -> str: ...

    @property
    def until(self) -> date | None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Access:
    """What a product service asks before a login."""

    team: str
    state: TeamState
    since: datetime | None  # None: in this state since the account started
    why: str
    login_allowed: bool
    billing_paused_until: date | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Lifecycle:
    access: Access
    notices: tuple[Notice, ...]  # every notice due by now, in time order
    not_invoiced: tuple[Window, ...]  # local dates whose billing-date invoice is not issued
    delete_at: datetime | None  # when the team's usage is (or was) to be removed


@dataclass(slots=True)
class _Open:
    """One invoice's dunning: its total, what has been paid, its failures."""

    total: Decimal
    due: datetime | None  # with payment terms: its due date's local midnight
    paid: Decimal = Decimal(0)
    failures: int = 0
    first_failure: datetime | None = None

    @property
    def settled(self) -> bool:
        return self.paid >= self.total


@dataclass(order=True, frozen=True, slots=True)
class _Happening:
    at: datetime
    order: int  # at one moment: retries asked, then inputs, then the steps they may cause
    seq: int
    act: Callable[[datetime], None] = field(compare=False)


class _Replay:
    """The time-ordered replay: two tracks, the notices, and the windows not invoiced."""

    def __init__(self, account: Account, policy: DunningPolicy, invoices: dict[InvoiceKey, _Open],
                 now: datetime) -> None:
        self.team, self.policy, self.invoices, self.now = account.team, policy, invoices, now
        self.calendar: BillingCalendar = account.calendar
        self.dunning: TeamState = "active"
        self.subscription: TeamState = "active"
        self.state: TeamState = "active"
        self.since: datetime | None = None
        self.why = "in good standing"
        self.billing_paused_until: date | None = None
        self.notices: list[Notice] = []
        self.windows: list[Window] = []
        self.delete_at: datetime | None = None
        self._queue: list[_Happening] = []
        self._seq = 0
        self._suspended_at: datetime | None = None
        self._paused_at: datetime | None = None

    # --- the queue -------------------------------------------------------------------------
    def at(self, moment: datetime, act: Callable[[datetime], None], *, order: int = 2) -> None:
        """`act(moment)` in time order, if `moment` is not after now."""
        if moment <= self.now:
            self._seq += 1
            heapq.heappush(self._queue, _Happening(moment, order, self._seq, act))

    def run(self) -> None:
        while self._queue:
            happening = heapq.heappop(self._queue)
            happening.act(happening.at)

    # --- notices and states ----------------------------------------------------------------
    def notice(self, kind: NoticeType, moment: datetime, reason: str, *,
               invoice: InvoiceKey | None = None, attempt: int | None = None) -> None:
        stamp = moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
        parts = [self.team, kind]
        if invoice is not None:
            parts += [invoice[0].isoformat(), invoice[1]]
        if attempt is not None:
            parts.append(str(attempt))
        parts.append(stamp)
        ref = None if invoice is None else InvoiceRef(invoice_date=invoice[0],
                                                      reference=invoice[1])
        self.notices.append(Notice(
            id="/".join(parts), type=kind, time=moment.astimezone(UTC), subject=self.team,
            data=NoticeData(state=self.state, reason=reason, invoice=ref, attempt=attempt)))

    def settle_state(self, moment: datetime, reason: str, *,
                     invoice: InvoiceKey | None = None) -> None:
        """Recompute the shown state from both tracks; a change is one notice."""
        state = next(s for s in _GRAVITY if s in (self.dunning, self.subscription))
        if state == self.state:
            return
        before, self.state, self.since, self.why = self.state, state, moment, reason
        if (before in NOT_INVOICED) != (state in NOT_INVOICED):
            self._window(moment, opening=state in NOT_INVOICED)
        if state == "active" and before == "cancelled":
            return  # resumed before the paid term ended: nothing to tell
        if state == "past_due":
            return  # the first failure's own notice tells it
        self.notice(_NOTICE_OF[state], moment, reason, invoice=invoice)

    def _window(self, moment: datetime, *, opening: bool) -> None:
        # An invoice dated D arises at D's local midnight: a change at midnight already
        # counts for D, a change later in the day from D + 1. A subscription that pauses at
        # its term's end D still settles its pending lines on D's invoice: from D + 1.
        day = self.calendar.local_date(moment)
        if moment > self.calendar.midnight(day) or (
                opening and self.subscription == "paused" and self.dunning == "active"):
            day += timedelta(days=1)
        if opening:
            self.windows.append((day, None))
        elif self.windows and self.windows[-1][1] is None:
            start, _ = self.windows.pop()
            if day > start:
                self.windows.append((start, day))

    # --- dunning ---------------------------------------------------------------------------
    def _fail(self, moment: datetime, key: InvoiceKey, why: str) -> None:
        dunned = self.invoices[key]
        dunned.failures += 1
        label = _label(key)
        if dunned.first_failure is None:
            dunned.first_failure = moment
            if self.dunning == "active":
                self.dunning = "past_due"
                self.settle_state(moment, f"{why}: the invoice {label} is unpaid", invoice=key)
            self.notice("payment_failed_notice", moment,
                        f"{why}: please update the payment method to pay the invoice {label}",
                        invoice=key)
            for number, days in enumerate(self.policy.retry_days, start=2):
                self.at(moment + timedelta(days=days), partial(self.retry, key, number),
                        order=0)
        if dunned.failures >= self.policy.suspend_after_failures and self.dunning in (
                "active", "past_due"):
            self.dunning = "suspended"
            self._suspended_at = moment
            self.settle_state(moment, f"{dunned.failures} failed payments of the invoice "
                              f"{label}", invoice=key)
            self.at(moment + timedelta(days=self.policy.pause_after_days),
                    partial(self.pause, moment))

    def failed(self, payment: PaymentEvent, moment: datetime) -> None:
        if self.state == "deleted":
            return  # final
        key = _key_of(payment)
        dunned = self.invoices.get(key)
        if dunned is None or dunned.settled or (dunned.due is not None and moment < dunned.due):
            return  # on terms, dunning starts at the due date, not at a declined card
        self._fail(moment, key, f"payment failed ({payment.data.failure or 'declined'})")

    def due(self, key: InvoiceKey, moment: datetime) -> None:
        if self.state == "deleted":
            return  # final
        if not self.invoices[key].settled:
            self._fail(moment, key, "not paid by its due date")

    def retry(self, key: InvoiceKey, attempt: int, moment: datetime) -> None:
        dunned = self.invoices[key]
        if dunned.settled or self.state == "deleted":
            return
        self.notice("payment_retry_due", moment, f"retry the payment of the invoice "
                    f"{_label(key)}", invoice=key, attempt=attempt)
        if dunned.due is not None:
            self._fail(moment, key, "still not paid")

    def method_updated(self, _payment: PaymentEvent, moment: datetime) -> None:
        if self.state == "deleted":
            return  # final
        for key, dunned in sorted(self.invoices.items()):
            if dunned.first_failure is not None and not dunned.settled:
                self.notice("payment_retry_due", moment, "payment method updated: retry the "
                            f"payment of the invoice {_label(key)}", invoice=key,
                            attempt=dunned.failures + 1)

    def paid(self, payment: PaymentEvent, moment: datetime) -> None:
        if self.state == "deleted":
            return  # final
        key = _key_of(payment)
        if key not in self.invoices:
            return
        self.invoices[key].paid += payment.money
        still_open = [k for k, d in self.invoices.items()
                      if d.first_failure is not None and not d.settled]
        if not still_open and self.dunning != "active":
            self.dunning = "active"
            self._suspended_at = self._paused_at = None
            self.settle_state(moment, f"the invoice {_label(key)} was paid: nothing is "
                              "overdue", invoice=key)

    def pause(self, suspended_at: datetime, moment: datetime) -> None:
        if self.dunning == "suspended" and self._suspended_at == suspended_at:
            self.dunning = "paused"
            self._paused_at = moment
            self.settle_state(moment, f"suspended for {self.policy.pause_after_days} days "
                              "with payments overdue")
            self.at(moment + timedelta(days=self.policy.retention_days),
                    partial(self.archive, moment))

    def archive(self, paused_at: datetime, moment: datetime) -> None:
        if self.dunning == "paused" and self._paused_at == paused_at:
            self.dunning = "archived"
            self.settle_state(moment, f"paused for {self.policy.retention_days} days with "
                              "payments overdue; data kept")

    # --- subscription and deletion ---------------------------------------------------------
    def step(self, step: StatusStep, moment: datetime) -> None:
        if self.state == "deleted":
            return  # final
        if step.status == "billing_paused":
            self.billing_paused_until = step.until
            return
        if step.status == "active":
            self.billing_paused_until = None
        self.subscription = _SUBSCRIPTION_STATE.get(step.status, "active")
        self.settle_state(moment, step.reason)

    def delete(self, change: BillingChange, moment: datetime) -> None:
        self.subscription = self.dunning = "deleted"
        self.settle_state(moment, f"deletion requested by {change.data.by} on "
                          f"{self.calendar.local_date(change.time)}; usage removed")


def _label(key: InvoiceKey) -> str:
    day, reference = key
    return f"of {day}" + (f" ({reference})" if reference else "")


def _key_of(payment: PaymentEvent) -> InvoiceKey:
    ref = payment.data.invoice  # an outcome names its invoice (schemas/payments.py)
    return (date.min, "") if ref is None else (ref.invoice_date, ref.reference)


_SUBSCRIPTION_STATE: Final[dict[str, TeamState]] = {
    "cancelled": "cancelled", "paused": "paused", "archived": "archived",
}


def team_lifecycle(
    account: Account,
    catalog: Catalog,
    *,
    invoices: Iterable[Invoice],
    payments: Sequence[PaymentEvent],
    changes: Sequence[BillingChange],
    now: datetime,
    steps: Sequence[StatusStep] = (),
) -> Lifecycle:
    """The team's lifecycle as of `now`: its invoices (credit notes and invoices of nothing
    are skipped), payment outcomes, billing changes in effect order, and its subscription's
    status `steps` (tier plans). Pure: the same inputs give the same answer, notices and
    ids included."""
    policy = catalog.policy(account)
    calendar = account.calendar
    dunned: dict[InvoiceKey, _Open] = {}
    due_moments: list[tuple[datetime, InvoiceKey]] = []
    for invoice in invoices:
        if invoice.document != "invoice" or Decimal(invoice.total) <= 0:
            continue
        key = (invoice.invoice_date, invoice.reference)
        # Due on its due date: unpaid at the end of that day (local midnight after it).
        due = (None if invoice.due_date is None
               else calendar.midnight(invoice.due_date + timedelta(days=1)))
        dunned[key] = _Open(total=Decimal(invoice.total), due=due)
        if due is not None:
            due_moments.append((due, key))
    replay = _Replay(account, policy, dunned, now)
    handlers = {"payment_failed": replay.failed, "payment_succeeded": replay.paid,
                "payment_method_updated": replay.method_updated}
    for payment in payments:
        replay.at(payment.time, partial(handlers[payment.type], payment), order=1)
    for moment, key in due_moments:
        replay.at(moment, partial(replay.due, key))
    for step in steps:
        replay.at(calendar.midnight(step.at), partial(replay.step, step), order=1)
    for change in changes:
        if change.type == "delete_requested" and replay.delete_at is None:
            replay.delete_at = change.time + timedelta(days=policy.delete_grace_days)
            replay.at(replay.delete_at, partial(replay.delete, change))
    replay.run()
    access = Access(team=account.team, state=replay.state, since=replay.since, why=replay.why,
                    login_allowed=replay.state not in LOGIN_DENIED,
                    billing_paused_until=replay.billing_paused_until)
    return Lifecycle(access=access, notices=tuple(replay.notices),
                     not_invoiced=tuple(replay.windows), delete_at=replay.delete_at)
