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
    by_reference = {d.reference: d for d in documents if d.document == "credit_note"}
    paid = paid_by_invoice(payments)
    notes = _notes_of(documents)
    out: list[Invoice] = []
    for change in changes:
        if change.type != "refund_requested":
            continue
        key = (account.calendar.local_date(change.time), credit_note_reference(change))
        stored = by_reference.get(key[1])  # by reference: a zone edit moves no note
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
        by_key[key] = by_reference[key[1]] = note
        out.append(note)
    return out


def due_credit_notes(account: Account, *, changes: Sequence[BillingChange],
                     documents: Sequence[Invoice], payments: Sequence[PaymentEvent],
                     as_of: datetime, grace: timedelta) -> list[Invoice]:
    """The credit notes due by `as_of` (a refund is due at its effective time plus grace, as
    an immediate charge) that `documents` do not hold yet."""
    held = {d.reference for d in documents if d.document == "credit_note"}
    in_effect = [c for c in changes if c.time + grace <= as_of]
    return [note for note in refund_notes(account, changes=in_effect, documents=documents,
                                          payments=payments)
            if note.reference not in held]


def refund_rejection_detail(change: BillingChange, account: Account, *,
                            stored: Sequence[BillingChange], documents: Sequence[Invoice],
                            payments: Sequence[PaymentEvent]) -> str | None:
    """Why refund `change` may not join the team's `stored` changes, or None: every refund,
    with it, is judged in effect order, as the close will issue them (a whole refund credits
    what is left, so an earlier one sent late changes the later ones)."""
    history = sorted([*stored, change], key=lambda c: (int(c.time.timestamp()), c.source, c.id))
    try:
        refund_notes(account, changes=history, documents=documents, payments=payments)
    except BillingRuleError as exc:
        return str(exc)
    return None
