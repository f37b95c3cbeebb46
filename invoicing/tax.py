"""Tax from the billing address at rates from a TaxTable (catalog data, not code).

- EU (a country in `eu_vat`): VAT at that country's rate; none with a valid VAT number
  outside the seller's own country, and the tax line then states the reverse charge.
- US: sales tax at the state's rate where the table lists the state, none elsewhere.
- Anywhere else: none.
Every invoice gets one tax line, at zero when no tax applies, so the invoice says why. Tax
is subtotal x rate rounded once, half up; total = subtotal + tax (lines + tax = total).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from fractions import Fraction

from invoicing.money import format_amount, format_percent, format_rate, scaled_amount, sum_amounts
from schemas import BillingAddress, Invoice, InvoiceLine, TaxTable

__all__ = ["invoice_with_tax", "tax_line", "tax_rate"]


def tax_rate(*, address: BillingAddress, table: TaxTable) -> tuple[Decimal, str]:
    """The rate for `address` and the tax line's description."""
    country, region = address.country, address.region
    if country in table.eu_vat:
        if address.vat_id_valid and country != table.seller_country:
            return Decimal(0), (
                f"VAT reverse charge ({country}, VAT number {address.vat_id}): "
                "the customer accounts for the VAT"
            )
        rate = table.eu_vat[country]
        return rate, f"VAT {format_percent(rate)} ({country})"
    if country == "US" and region is not None and region in table.us_sales_tax:
        rate = table.us_sales_tax[region]
        return rate, f"Sales tax {format_percent(rate)} (US-{region})"
    where = f"{country}-{region}" if region else country
    return Decimal(0), f"No tax collected ({where})"


def tax_line(
    *,
    subtotal: Decimal,
    currency: str,
    address: BillingAddress,
    table: TaxTable,
    start: date,
    end: date,
) -> InvoiceLine:
    """quantity = the subtotal, unit_price = the rate, amount = their product rounded once."""
    rate, description = tax_rate(address=address, table=table)
    amount = scaled_amount(subtotal, Fraction(rate), currency=currency)
    return InvoiceLine(
        kind="tax",
        description=description,
        quantity=format_amount(subtotal, currency),
        unit_price=format_rate(rate),
        amount=format_amount(amount, currency),
        service_start=start,
        service_end=end,
    )


def invoice_with_tax(
    *,
    team: str,
    invoice_date: date,
    currency: str,
    lines: Sequence[InvoiceLine],
    address: BillingAddress,
    table: TaxTable,
) -> Invoice:
    """The invoice of `lines` plus its tax line; the tax line spans all the lines' service."""
    if not lines:
        raise ValueError(f"{team}: invoice {invoice_date} has no lines")
    if any(line.kind == "tax" for line in lines):
        raise ValueError(f"{team}: invoice {invoice_date} lines already carry tax")
    subtotal = sum_amounts((Decimal(line.amount) for line in lines), currency)
    tax = tax_line(
        subtotal=subtotal,
        currency=currency,
        address=address,
        table=table,
        start=min(line.service_start for line in lines),
        end=max(line.service_end for line in lines),
    )
    tax_amount = Decimal(tax.amount)
    return Invoice(
        team=team,
        invoice_date=invoice_date,
        currency=currency,
        lines=(*lines, tax),
        subtotal=format_amount(subtotal, currency),
        tax=format_amount(tax_amount, currency),
        total=format_amount(sum_amounts([subtotal, tax_amount], currency), currency),
    )
