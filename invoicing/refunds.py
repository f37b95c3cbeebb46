"""A team's refunds in order: which credit notes its refund_requested changes issue (the
rules of each note are invoicing/credit_notes.py's).

Refunds of a team are taken in effect order. Each one is judged against what was paid for
the invoice it names, less what the notes before it credit (issued or not yet), so two
refunds sent before a close can never credit more than was paid between them. The worker
stores a refund only when it passes (`refund_rejection`); the close issues each stored one
once it is due (`due_credit_notes`), reusing the note already stored under its key.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal

from invoicing.credit_notes import (
    credit_note,
    credit_note_number,
    credit_note_reference,
    credited_amount,
    refund_problem,
)
from invoicing.errors import BillingRuleError
from invoicing.payments import paid_by_invoice
from schemas import Account, BillingChange, Invoice, PaymentEvent

__all__ = ["due_credit_notes", "refund_notes", "refund_rejection_detail"]

Key = tuple[date, str]


def _notes_of(documents: Iterable[Invoice]) -> list[Invoice]:
    return sorted((d for d in documents if d.document == "credit_note"),
                  key=lambda note: (note.invoice_date, note.reference))


def refund_notes(account: Account, *, changes: Sequence[BillingChange],
                 documents: Sequence[Invoice], payments: Sequence[PaymentEvent]
                 ) -> list[Invoice]:
    """The credit note of every refund in `changes` (in effect order): the stored one when
    `documents` (the team's stored invoices and notes) hold its key, else a new one, numbered
    after the team's notes so far. Raises the BillingRuleError of a refund that does not
    apply (the worker refused it before it was stored, so only a catalog edit can)."""
    by_key = {(d.invoice_date, d.reference): d for d in documents}
    paid = paid_by_invoice(payments)
    notes = _notes_of(documents)
    out: list[Invoice] = []
    for change in changes:
        if change.type != "refund_requested":
            continue
        key = (account.calendar.local_date(change.time), credit_note_reference(change))
        stored = by_key.get(key)
        if stored is not None:
            out.append(stored)
            continue
        ref = change.data.invoice
        invoice = None if ref is None else by_key.get((ref.invoice_date, ref.reference))
        if invoice is None or ref is None:
            raise BillingRuleError(f"{account.team}: refund {change.reference}: no invoice "
                                   f"of {ref.invoice_date if ref else '?'} is issued")
        note = credit_note(
            change, invoice=invoice, calendar=account.calendar,
            number=credit_note_number(team=account.team, invoice_date=key[0],
                                      sequence=len(notes) + 1),
            paid=paid.get((ref.invoice_date, ref.reference), Decimal(0)),
            credited=credited_amount(invoice, notes))
        notes.append(note)
        by_key[key] = note
        out.append(note)
    return out


def due_credit_notes(account: Account, *, changes: Sequence[BillingChange],
                     documents: Sequence[Invoice], payments: Sequence[PaymentEvent],
                     as_of: datetime, grace: timedelta) -> list[Invoice]:
    """The credit notes due by `as_of` (a refund is due at its effective time plus grace, as
    an immediate charge) that `documents` do not hold yet."""
    held = {(d.invoice_date, d.reference) for d in documents}
    in_effect = [c for c in changes if c.time + grace <= as_of]
    return [note for note in refund_notes(account, changes=in_effect, documents=documents,
                                          payments=payments)
            if (note.invoice_date, note.reference) not in held]


def refund_rejection_detail(change: BillingChange, account: Account, *,
                            stored: Sequence[BillingChange], documents: Sequence[Invoice],
                            payments: Sequence[PaymentEvent]) -> str | None:
    """Why refund `change` may not join the team's `stored` changes, or None: it is judged
    after every refund stored before it, as the close will issue them."""
    try:
        notes = refund_notes(account, changes=stored, documents=documents, payments=payments)
    except BillingRuleError as exc:
        return str(exc)
    ref = change.data.invoice
    if ref is None:
        return "a refund names the invoice it credits"
    everything = [*documents, *notes]
    invoice = next((d for d in everything if (d.invoice_date, d.reference)
                    == (ref.invoice_date, ref.reference) and d.document == "invoice"), None)
    if invoice is None:
        named = next((d for d in everything if (d.invoice_date, d.reference)
                      == (ref.invoice_date, ref.reference)), None)
        return refund_problem(change, invoice=named, paid=Decimal(0), credited=Decimal(0),
                              today=account.calendar.local_date(change.time),
                              anchor_day=account.calendar.anchor_day)
    paid = paid_by_invoice(payments).get((ref.invoice_date, ref.reference), Decimal(0))
    return refund_problem(change, invoice=invoice, paid=paid,
                          credited=credited_amount(invoice, _notes_of(everything)),
                          today=account.calendar.local_date(change.time),
                          anchor_day=account.calendar.anchor_day)
