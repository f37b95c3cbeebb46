"""The conservation ledger's figures and identities per (team, period), from the store's rows
(pure: no store, no clock; `metering reconcile` and GET .../ledger read the rows).

Inputs, each per (team, period): the ledger's sums (`LedgerCount`: what the worker received
and what became of it, each message counted once), what the events table holds
(`StoredEvents`: distinct (source, id) and distinct users), the counted users (`period_mau`)
and the issued invoices' usage records. Four identities, each named:

- ``received``: received = accepted + rejected.
- ``accepted``: accepted = distinct stored + duplicates, where duplicates are the window's
  (caught by the worker) plus the store key's: events written again under a (source, id) the
  store already held (written - distinct stored: a producer retry beyond the window, or a
  redelivery after a worker restart). Violated when the store holds more distinct events than
  were written (events inserted around the pipeline, or a ledger row lost), when a period has
  events but no ledger rows, or when the ledger's own rows do not add up.
- ``users``: counted users = distinct users among the stored events, checked while the
  period's raw events are kept (`metering prune` drops events and ledger alike: a period with
  counted users but neither is not checked, "raw events pruned").
- ``billed``: for a period an issued invoice billed, billed users (the first invoice's record)
  + adjusted users (the increases of later invoices' records, each invoice listed) + pending
  (users counted since, awaiting the next adjustment) = current MAU. Violated when the MAU is
  below billed + adjusted (users lost from the store after billing); pending is reported only.

A lost event whose user has other events looks like a store-key duplicate: `accepted` cannot
tell the two apart (only its user's loss shows, in `users`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal, NamedTuple

from aggregation import LedgerCount, PeriodCount, StoredEvents, StoredInvoice, parse_reasons

__all__ = [
    "IDENTITIES",
    "Adjustment",
    "Billing",
    "Identity",
    "IdentityName",
    "PeriodLedger",
    "reconcile_rows",
    "team_label",
    "violation_line",
]

IdentityName = Literal["received", "accepted", "users", "billed"]
IDENTITIES: tuple[IdentityName, ...] = ("received", "accepted", "users", "billed")
PRUNED = "raw events pruned"


class Identity(NamedTuple):
    """One identity of one period: `holds` None when it was not checked (`note` says why)."""

    name: IdentityName
    holds: bool | None
    left: int
    right: int
    note: str  # what the two sides are; on a violation, what it means


class Adjustment(NamedTuple):
    """A later invoice that booked more users for the period: by how many."""

    invoice_date: date
    reference: str
    users: int


@dataclass(frozen=True, slots=True)
class Billing:
    """What the issued invoices billed for one period, against its current MAU."""

    invoice_date: date  # the first invoice that billed the period
    reference: str
    users: int  # the users it billed
    adjustments: tuple[Adjustment, ...]  # later invoices' increases, in invoice order
    pending: int  # counted since, not booked yet (0 when the MAU is below what was booked)

    @property
    def adjusted(self) -> int:
        return sum(adjustment.users for adjustment in self.adjustments)


@dataclass(frozen=True, slots=True)
class PeriodLedger:
    """One (team, period): the figures and the identities (see the module docstring)."""

    team: str
    period_start: date
    messages: int
    received: int
    accepted: int
    rejected: int
    reasons: tuple[tuple[str, int], ...]  # rejected by reason, by reason
    window_duplicates: int
    store_duplicates: int  # written - distinct stored, never below 0
    written: int
    late: int
    distinct_events: int  # distinct (source, id) in the events table
    stored_users: int  # distinct users among them
    counted_users: int  # period_mau: the current MAU
    has_ledger: bool  # the ledger holds rows of the period
    billing: Billing | None  # None: no issued invoice billed the period
    identities: tuple[Identity, ...]

    @property
    def duplicates(self) -> int:
        return self.window_duplicates + self.store_duplicates

    @property
    def violations(self) -> tuple[Identity, ...]:
        return tuple(identity for identity in self.identities if identity.holds is False)


Key = tuple[str, date]


def _billing(records: Sequence[tuple[StoredInvoice, int]], mau: int) -> Billing:
    """`records`: the invoices that billed the period, in invoice order, with the users each
    recorded for it."""
    first, users = records[0]
    booked = users
    adjustments: list[Adjustment] = []
    for invoice, recorded in records[1:]:
        if recorded > booked:
            adjustments.append(Adjustment(invoice.invoice_date, invoice.reference,
                                          recorded - booked))
            booked = recorded
    return Billing(first.invoice_date, first.reference, users, tuple(adjustments),
                   max(mau - booked, 0))


def _received(count: LedgerCount | None) -> Identity:
    received = 0 if count is None else count.received
    accepted = 0 if count is None else count.accepted
    rejected = 0 if count is None else count.rejected
    return Identity("received", received == accepted + rejected, received, accepted + rejected,
                    f"received {received}, accepted {accepted} + rejected {rejected}")


def _accepted(count: LedgerCount | None, distinct: int) -> tuple[Identity, int]:
    """The identity and the store-key duplicates."""
    if count is None:
        return Identity(
            "accepted", distinct == 0, 0, distinct,
            f"distinct stored {distinct} with no ledger rows: events written before the "
            "ledger existed, or its rows lost" if distinct else "no events"), 0
    window, written, accepted = count.duplicates, count.written, count.accepted
    store = max(written - distinct, 0)
    right = distinct + window + store
    if distinct > written:
        note = (f"distinct stored {distinct} + window duplicates {window}: the store holds "
                f"{distinct - written} more distinct events than were written (inserted "
                "around the pipeline, or a ledger row lost)")
    elif accepted != right:
        note = (f"written {written} + window duplicates {window}: the ledger's rows do not "
                "add up")
    else:
        note = (f"distinct stored {distinct} + window duplicates {window} + store-key "
                f"duplicates {store}")
    return Identity("accepted", accepted == right, accepted, right, note), store


def _users(count: LedgerCount | None, stored: StoredEvents | None, counted: int) -> Identity:
    users = 0 if stored is None else stored.users
    if stored is None and count is None and counted:
        return Identity("users", None, counted, users, PRUNED)
    note = f"counted users {counted}, distinct users among stored events {users}"
    if counted < users:
        note += ": stored events of users not counted"
    elif counted > users:
        note += ": counted users whose events are gone"
    return Identity("users", counted == users, counted, users, note)


def _billed(billing: Billing, mau: int) -> Identity:
    booked = billing.users + billing.adjusted
    left = booked + billing.pending
    note = (f"billed {billing.users} on {billing.invoice_date} + adjusted {billing.adjusted} "
            f"+ pending {billing.pending}, current MAU {mau}")
    if mau < booked:
        note += f": {booked - mau} users lost from the store after billing"
    return Identity("billed", left == mau, left, mau, note)


def _period(key: Key, count: LedgerCount | None, stored: StoredEvents | None, counted: int,
            billed: Sequence[tuple[StoredInvoice, int]]) -> PeriodLedger:
    distinct = 0 if stored is None else stored.events
    accepted, store_duplicates = _accepted(count, distinct)
    identities = [_received(count), accepted, _users(count, stored, counted)]
    billing = _billing(billed, counted) if billed else None
    if billing is not None:
        identities.append(_billed(billing, counted))
    reasons = parse_reasons(count.reasons) if count is not None else {}
    return PeriodLedger(
        team=key[0], period_start=key[1],
        messages=count.messages if count else 0, received=count.received if count else 0,
        accepted=count.accepted if count else 0, rejected=count.rejected if count else 0,
        reasons=tuple(sorted(reasons.items())),
        window_duplicates=count.duplicates if count else 0, store_duplicates=store_duplicates,
        written=count.written if count else 0, late=count.late if count else 0,
        distinct_events=distinct, stored_users=0 if stored is None else stored.users,
        counted_users=counted, has_ledger=count is not None, billing=billing,
        identities=tuple(identities),
    )


def reconcile_rows(
    ledger: Iterable[LedgerCount],
    stored: Iterable[StoredEvents],
    counted: Iterable[PeriodCount],
    invoices: Iterable[StoredInvoice],
    *,
    periods: Iterable[Key] = (),
) -> list[PeriodLedger]:
    """Every (team, period) any of the rows names, and those of `periods` (zeros where no row
    names them), ordered by team, period. Of `invoices`, in key order (team, date,
    reference), the first to record a period billed it."""
    counts = {(row.team, row.period_start): row for row in ledger}
    events = {(row.team, row.period_start): row for row in stored}
    mau = {(row.team, row.period_start): row.active_users for row in counted}
    billed: dict[Key, list[tuple[StoredInvoice, int]]] = {}
    for invoice in sorted(invoices, key=lambda stored_invoice: stored_invoice.key):
        for record in invoice.usage:
            billed.setdefault((invoice.team, record.period_start), []).append(
                (invoice, record.active_users))
    keys = sorted(counts.keys() | events.keys() | mau.keys() | billed.keys() | set(periods))
    return [_period(key, counts.get(key), events.get(key), mau.get(key, 0), billed.get(key, ()))
            for key in keys]


def team_label(team: str) -> str:
    """`team` as printed: "" for the events that named no valid team."""
    return team or '""'


def violation_line(team: str, period_start: date, identity: Identity) -> str:
    """One violated identity as `metering reconcile` prints it on stderr."""
    return (f"metering: ledger: team {team_label(team)} period {period_start}: "
            f"{identity.name}: {identity.left} != {identity.right} ({identity.note})")
