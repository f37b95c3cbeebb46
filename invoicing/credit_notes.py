"""Refunds as credit notes (seeds 000 and 003: "partial or full refunds").

A `refund_requested` change issues a credit note: a document of its own ("credit_note") that
names the invoice it credits and mirrors that invoice's lines and tax with negative amounts;
the credited invoice never changes. The rules:

- Whole refund (neither amount nor remaining_months): every line and the tax mirrored
  exactly, total = -(invoice total). Once part of the invoice is credited, or when less
  than its total was paid, a whole refund credits what is left: paid - credited, as a
  partial refund of that amount.
- Partial refund of an amount A (tax included: what the customer gets back): every untaxed
  line and the tax scaled by A / invoice total, each rounded once, half up; the rounding
  remainder goes on the invoice's largest line (first on ties), so the total is exactly -A.
- remaining_months (seed 000: "for annual prepaid plans, partial refunds for the remaining
  months"): only the invoice's base and seats lines whose service is a 12-month term; each
  credits m/12 of its amount, rounded once, where m is the whole months of the term after
  the month in progress on the refund's date (that month was used); other lines are not
  credited.
- Tax is credited in the share the note credits: the invoice's tax x A / total for an
  amount, x (lines credited / subtotal) for remaining months, rounded once. It is a share
  of the tax charged, so the tax line's amount may differ by a minor unit from its
  quantity (the note's subtotal) x the rate.
- A mirrored line keeps the invoice line's kind, quantity and service (remaining months:
  the months credited), negates its unit price and amount, and puts "Credit: " before its
  description, which states the share when it is not the whole line.
- Cap: what is credited for an invoice never exceeds what was paid for it, nor its total.
  A refund beyond paid - credited is refused with the figures, never trimmed.
- The note's date is the refund's local date in the account's zone; its reference is
  "refund/" + the change's "source/id", so its key (team, date, reference) is the same on
  every rerun; its number is "CN-{team}-{date:%Y%m%d}-{n}" (see `credit_note_number`).

Every refusal is one line: `refund_problem` returns it, `credit_note` raises it as a
BillingRuleError (DateRefused for dates, CountRefused for amounts, NotApplicable otherwise).
A plain ValueError is a caller's mistake: not a refund change, an invoice of another key.
"""

from __future__ import annotations

from calendar import monthrange
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Final

from invoicing.errors import BillingRuleError, CountRefused, DateRefused, NotApplicable
from invoicing.money import (
    exponent,
    format_amount,
    format_unit_price,
    scaled_amount,
    sum_amounts,
    zero,
)
from invoicing.terms import Term
from schemas import (
    BillingCalendar,
    BillingChange,
    CreditedInvoice,
    Invoice,
    InvoiceLine,
    InvoiceRef,
    LineKind,
)

__all__ = [
    "CREDIT_PREFIX",
    "REFUND_REFERENCE_PREFIX",
    "TERM_KINDS",
    "credit_note",
    "credit_note_number",
    "credit_note_reference",
    "credited_amount",
    "refund_problem",
]

# A note's reference is this plus the change's "source/id": one change, one note key.
REFUND_REFERENCE_PREFIX: Final = "refund/"
# Starts every mirrored line's description.
CREDIT_PREFIX: Final = "Credit: "
# Lines that bill a prepaid term, which remaining_months credits (tier base, seats/licences).
TERM_KINDS: Final[frozenset[LineKind]] = frozenset({"base", "seats"})
# Months of the annual prepaid term that remaining_months refunds a share of.
_ANNUAL_MONTHS: Final = 12
_LAST_ANCHOR_DAY: Final = 31


def credit_note_reference(change: BillingChange) -> str:
    """The note's reference: "refund/" + the change's "source/id"."""
    return f"{REFUND_REFERENCE_PREFIX}{change.reference}"


def credit_note_number(*, team: str, invoice_date: date, sequence: int) -> str:
    """The note's number, "CN-{team}-{invoice_date:%Y%m%d}-{sequence}": `sequence` (from 1)
    is the note's place among the team's credit notes in (invoice_date, reference) order.
    A team's refunds come in time order on its partition, so a new note sorts last and no
    number ever changes; a rerun finds its note by key and keeps its number."""
    if sequence < 1:
        raise ValueError(f"credit note sequence must be >= 1, got {sequence}")
    return f"CN-{team}-{invoice_date:%Y%m%d}-{sequence}"


def credited_amount(invoice: Invoice, notes: Iterable[Invoice]) -> Decimal:
    """What the credit notes among `notes` credit `invoice`, as a positive amount."""
    key = CreditedInvoice(invoice_date=invoice.invoice_date, reference=invoice.reference)
    return sum_amounts(
        (-Decimal(note.total) for note in notes
         if note.document == "credit_note" and note.team == invoice.team
         and note.credits == key),
        invoice.currency,
    )


@dataclass(frozen=True, slots=True)
class _Credited:
    """What a note credits of one invoice line (a positive amount credits a charge)."""

    line: InvoiceLine
    amount: Decimal
    start: date
    end: date
    note: str  # what the description adds after the invoice line's own


@dataclass(frozen=True, slots=True)
class _Refund:
    """A refund that may go ahead: the lines credited, the tax credited, and the tax line."""

    lines: tuple[_Credited, ...]
    tax: Decimal
    tax_line: InvoiceLine | None
    tax_note: str

    @property
    def subtotal(self) -> Decimal:
        return sum((credited.amount for credited in self.lines), Decimal(0))


@dataclass(frozen=True, slots=True)
class _Refused:
    error: type[BillingRuleError]
    reason: str


@dataclass(frozen=True, slots=True)
class _Figures:
    """The credited invoice's amounts, checked to add up."""

    currency: str
    lines: tuple[InvoiceLine, ...]  # untaxed lines
    tax_line: InvoiceLine | None
    subtotal: Decimal
    tax: Decimal
    total: Decimal

    def show(self, amount: Decimal) -> str:
        return f"{format_amount(amount, self.currency)} {self.currency}"


def _invoice_name(invoice_date: date, reference: str) -> str:
    return f"invoice of {invoice_date}" + (f" ({reference})" if reference else "")


def _decimals(value: Decimal) -> int:
    """Digits after the point that `value` (finite) is written with."""
    places = value.as_tuple().exponent
    return -places if isinstance(places, int) and places < 0 else 0


def _figures(invoice: Invoice) -> _Figures:
    """The invoice's untaxed lines, tax line and amounts; a ValueError when they do not add
    up (subtotal = untaxed lines, tax = the tax line, total = subtotal + tax)."""
    currency = invoice.currency
    untaxed = tuple(line for line in invoice.lines if line.kind != "tax")
    taxes = [line for line in invoice.lines if line.kind == "tax"]
    name = _invoice_name(invoice.invoice_date, invoice.reference)
    if len(taxes) > 1:
        raise ValueError(f"{invoice.team}: {name} has {len(taxes)} tax lines")
    subtotal, tax, total = (Decimal(invoice.subtotal), Decimal(invoice.tax),
                            Decimal(invoice.total))
    lines_sum = sum_amounts((Decimal(line.amount) for line in untaxed), currency)
    tax_sum = Decimal(taxes[0].amount) if taxes else zero(currency)
    if lines_sum != subtotal or tax_sum != tax or subtotal + tax != total:
        raise ValueError(f"{invoice.team}: {name} does not add up (lines {lines_sum}, "
                         f"subtotal {subtotal}, tax {tax}, total {total})")
    return _Figures(currency=currency, lines=untaxed, tax_line=taxes[0] if taxes else None,
                    subtotal=subtotal, tax=tax, total=total)


def _money(value: Decimal, what: str) -> Decimal:
    if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
        raise ValueError(f"{what} must be a finite Decimal >= 0, got {value!r}")
    return value


def _annual_term(line: InvoiceLine, anchor_day: int | None) -> Term | None:
    """The 12-month term that `line`'s service spans, or None. Its months end on the
    account's `anchor_day` when the line's start is a billing date for it; else on the
    start's day, or a later one when the start is its month's last day (anchor 31 in
    February), the first that ends the term on the line's service end."""
    start, end = line.service_start, line.service_end
    month_end = monthrange(start.year, start.month)[1]
    later = range(start.day, (_LAST_ANCHOR_DAY if start.day == month_end else start.day) + 1)
    preferred = () if anchor_day is None or anchor_day not in later else (anchor_day,)
    for day in (*preferred, *later):
        term = Term(start=start, months=_ANNUAL_MONTHS, anchor_day=day)
        if term.end == end:
            return term
    return None


def _months_left(term: Term, today: date) -> tuple[int, date]:
    """Whole months of `term` after the month in progress on `today`, and where they start."""
    if today < term.start:
        return term.months, term.start
    used = next(k for k in range(term.months) if today < term.anchor(k + 1)) + 1
    return term.months - used, term.anchor(used)


def _remaining_months(
    figures: _Figures, today: date, name: str, anchor_day: int | None
) -> _Refund | _Refused:
    terms = [(line, term) for line in figures.lines
             if line.kind in TERM_KINDS and (term := _annual_term(line, anchor_day)) is not None]
    if not terms:
        return _Refused(NotApplicable, f"the {name} bills no 12-month term: "
                                       "remaining_months refunds annual prepaid plans only")
    credited: list[_Credited] = []
    for line, term in terms:
        if today >= term.end:
            return _Refused(DateRefused, f"the term {term.start} to {term.end} of the {name} "
                                         f"ended on {term.end}")
        months, start = _months_left(term, today)
        if months == 0:
            return _Refused(DateRefused, f"no whole month of the term {term.start} to "
                                         f"{term.end} is left after {today}")
        amount = scaled_amount(Decimal(line.amount), Fraction(months, term.months),
                               currency=figures.currency)
        credited.append(_Credited(
            line=line, amount=amount, start=start, end=term.end,
            note=f", {months}/{term.months} months unused from {start}"))
    net = sum_amounts((c.amount for c in credited), figures.currency)
    tax = scaled_amount(figures.tax, Fraction(net) / Fraction(figures.subtotal),
                        currency=figures.currency)
    return _Refund(lines=tuple(credited), tax=tax, tax_line=figures.tax_line, tax_note="")


def _scaled(figures: _Figures, amount: Decimal) -> _Refund:
    """The invoice's lines and tax scaled to a gross `amount`; the rounding remainder on the
    largest line, so lines + tax = amount exactly."""
    if amount == figures.total:
        return _Refund(
            lines=tuple(_Credited(line=line, amount=Decimal(line.amount),
                                  start=line.service_start, end=line.service_end, note="")
                        for line in figures.lines),
            tax=figures.tax, tax_line=figures.tax_line, tax_note="")
    currency = figures.currency
    share = Fraction(amount) / Fraction(figures.total)
    note = (f" (partial refund: {format_amount(amount, currency)} of "
            f"{figures.show(figures.total)})")
    amounts = [scaled_amount(Decimal(line.amount), share, currency=currency)
               for line in figures.lines]
    tax = scaled_amount(figures.tax, share, currency=currency)
    remainder = amount - tax - sum_amounts(amounts, currency)
    largest = max(range(len(amounts)), key=lambda i: (Decimal(figures.lines[i].amount), -i))
    amounts[largest] += remainder
    return _Refund(
        lines=tuple(_Credited(line=line, amount=credited, start=line.service_start,
                              end=line.service_end, note=note)
                    for line, credited in zip(figures.lines, amounts, strict=True)),
        tax=tax, tax_line=figures.tax_line, tax_note=note)


def _shown(amount: Decimal, figures: _Figures, text: str) -> str:
    try:
        return figures.show(amount)
    except InvalidOperation:  # too many digits to quantize: show it as it was given
        return f"{text} {figures.currency}"


def _assess(
    change: BillingChange,
    *,
    invoice: Invoice | None,
    paid: Decimal,
    credited: Decimal,
    today: date,
    anchor_day: int | None,
) -> _Refund | _Refused:
    if change.type != "refund_requested" or change.data.invoice is None:
        raise ValueError(f"{change.reference}: a {change.type} change is not a refund")
    ref: InvoiceRef = change.data.invoice
    name = _invoice_name(ref.invoice_date, ref.reference)
    if invoice is None:
        return _Refused(NotApplicable, f"no such invoice: {change.team} has no {name}")
    if (invoice.team, invoice.invoice_date, invoice.reference) != (
            change.team, ref.invoice_date, ref.reference):
        raise ValueError(
            f"{change.reference} refunds {change.team}'s {name}, not {invoice.team}'s "
            f"{_invoice_name(invoice.invoice_date, invoice.reference)}")
    if invoice.document == "credit_note":
        return _Refused(NotApplicable, f"the {name} is itself a credit note; refund the "
                                       "invoice it credits")
    paid, credited = _money(paid, "paid"), _money(credited, "credited")
    figures = _figures(invoice)
    if today < invoice.invoice_date:
        return _Refused(DateRefused, f"a refund on {today} is before the {name}")
    if figures.total <= 0:
        return _Refused(NotApplicable, f"the {name} charged nothing to refund (total "
                                       f"{figures.show(figures.total)})")
    if paid == 0:
        return _Refused(NotApplicable, f"nothing paid yet for the {name}")
    limit, what = (paid, "paid") if paid <= figures.total else (figures.total, "invoiced")
    left = limit - credited
    data = change.data
    months: _Refund | None = None
    if data.remaining_months:
        assessed = _remaining_months(figures, today, name, anchor_day)
        if isinstance(assessed, _Refused):
            return assessed
        months = assessed
        gross, text = months.subtotal + months.tax, ""
        if gross <= 0:
            return _Refused(NotApplicable, f"the months left of the {name} come to "
                                           f"{figures.show(gross)}: nothing to refund")
    elif data.amount is not None:
        gross, text = Decimal(data.amount), data.amount
        places = exponent(figures.currency)
        if _decimals(gross) > places:
            return _Refused(CountRefused, f"refund {data.amount} {figures.currency} has more "
                                          f"than the {places} decimals of {figures.currency}")
    else:
        gross, text = left, ""
    if left <= 0:
        return _Refused(CountRefused, f"nothing left to refund of the {name}: "
                                      f"{figures.show(limit)} {what}, "
                                      f"{format_amount(credited, figures.currency)} already "
                                      "credited")
    if gross > left:
        return _Refused(CountRefused, f"refund {_shown(gross, figures, text)} exceeds the "
                                      f"{figures.show(limit)} {what} less "
                                      f"{format_amount(credited, figures.currency)} already "
                                      "credited")
    return months if months is not None else _scaled(figures, gross)


def refund_problem(
    change: BillingChange,
    *,
    invoice: Invoice | None,
    paid: Decimal,
    credited: Decimal,
    today: date,
    anchor_day: int | None = None,
) -> str | None:
    """Why `change` (a refund_requested) cannot be credited, in one line, or None.

    `invoice` is the one the change names (None when the team has none by that key), `paid`
    what was paid for it, `credited` what earlier credit notes credit it (positive), `today`
    the refund's local date in the account's zone. Refused: no such invoice, a credit note,
    an invoice dated after the refund or charging nothing, nothing paid yet, an amount finer
    than the currency's minor unit or beyond what was paid (or invoiced) less what is already
    credited, remaining_months on an invoice without a 12-month term or once no whole month
    of the term is left. `anchor_day`, the account's, says where the months of a term
    starting on a short month's last day end (31 Mar, not 28 Mar, after 28 Feb); without it,
    on the start's day when that fits the term."""
    assessed = _assess(change, invoice=invoice, paid=paid, credited=credited, today=today,
                       anchor_day=anchor_day)
    return assessed.reason if isinstance(assessed, _Refused) else None


def _line(credited: _Credited, currency: str) -> InvoiceLine:
    line = credited.line
    return InvoiceLine(
        kind=line.kind,
        description=f"{CREDIT_PREFIX}{line.description}{credited.note}",
        quantity=line.quantity,
        unit_price=format_unit_price(-Decimal(line.unit_price), currency),
        amount=format_amount(-credited.amount, currency),
        service_start=credited.start,
        service_end=credited.end,
    )


def credit_note(
    change: BillingChange,
    *,
    invoice: Invoice,
    calendar: BillingCalendar,
    number: str,
    paid: Decimal,
    credited: Decimal,
) -> Invoice:
    """The credit note `change` issues against `invoice`, dated the change's local date in
    `calendar` (the account's: its zone, and its anchor day for the months of a term);
    raises the BillingRuleError `refund_problem` names when it is refused. `invoice` is not
    changed. Lines keep the invoice's order, kinds, quantities and
    service (remaining_months: the months credited), with "Credit: " before the description,
    the unit price and amount negated; the tax line's quantity is the note's subtotal."""
    if not number:
        raise ValueError("a credit note needs a number")
    today = calendar.local_date(change.time)
    assessed = _assess(change, invoice=invoice, paid=paid, credited=credited, today=today,
                       anchor_day=calendar.anchor_day)
    if isinstance(assessed, _Refused):
        raise assessed.error(assessed.reason)
    currency = invoice.currency
    credited_lines = [_line(c, currency) for c in assessed.lines]
    subtotal = -sum_amounts((c.amount for c in assessed.lines), currency)
    tax = -assessed.tax
    lines = list(credited_lines)
    if assessed.tax_line is not None:
        # Where the invoice has it: after the credited lines that come before it there.
        tax_at = invoice.lines.index(assessed.tax_line)
        before = sum(1 for c in assessed.lines
                     if any(c.line is line for line in invoice.lines[:tax_at]))
        lines.insert(before, InvoiceLine(
            kind="tax",
            description=f"{CREDIT_PREFIX}{assessed.tax_line.description}{assessed.tax_note}",
            quantity=format_amount(subtotal, currency),
            unit_price=assessed.tax_line.unit_price,
            amount=format_amount(tax, currency),
            service_start=min(line.service_start for line in credited_lines),
            service_end=max(line.service_end for line in credited_lines),
        ))
    return Invoice(
        team=invoice.team,
        invoice_date=today,
        currency=currency,
        lines=tuple(lines),
        subtotal=format_amount(subtotal, currency),
        tax=format_amount(tax, currency),
        total=format_amount(sum_amounts([subtotal, tax], currency), currency),
        reference=credit_note_reference(change),
        document="credit_note",
        number=number,
        credits=CreditedInvoice(invoice_date=invoice.invoice_date,
                                reference=invoice.reference),
    )
