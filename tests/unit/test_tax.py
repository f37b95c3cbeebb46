"""Tax by billing address from a rate table; one tax line per invoice; lines + tax = total."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from pydantic import ValidationError

from invoicing.plans.mau_minimum import minimum_line, overage_line
from invoicing.tax import invoice_with_tax, tax_line, tax_rate
from schemas.periods import Period
from schemas.plans import BillingAddress, MauMinimumPlan, TaxTable

D = date.fromisoformat

TABLE = TaxTable.model_validate({
    "eu_vat": {"NL": "0.21", "DE": "0.19", "IE": "0.23"},
    "us_sales_tax": {"CA": "0.0725", "NY": "0.04"},
    "seller_country": "IE",
})
DUTCH = BillingAddress(country="NL")
DUTCH_BUSINESS = BillingAddress(country="NL", vat_id="NL123456789B01", vat_id_valid=True)


def tax_of(subtotal: str, address: BillingAddress, currency: str = "USD") -> tuple[str, str]:
    line = tax_line(subtotal=Decimal(subtotal), currency=currency, address=address,
                    table=TABLE, start=D("2025-06-01"), end=D("2025-07-01"))
    assert line.kind == "tax"
    return line.amount, line.description


def test_eu_vat_by_country() -> None:
    assert tax_of("100.00", DUTCH) == ("21.00", "VAT 21% (NL)")
    assert tax_of("100.00", BillingAddress(country="DE")) == ("19.00", "VAT 19% (DE)")


def test_a_valid_vat_number_means_reverse_charge_noted_on_the_line() -> None:
    assert tax_of("100.00", DUTCH_BUSINESS) == (
        "0.00",
        "VAT reverse charge (NL, VAT number NL123456789B01): the customer accounts for the VAT")
    # Seed 004: "If you ... do not enter a valid EU Registered VAT number, VAT will be added."
    unverified = BillingAddress(country="NL", vat_id="NL000", vat_id_valid=False)
    assert tax_of("100.00", unverified) == ("21.00", "VAT 21% (NL)")
    # A business in the seller's own country pays domestic VAT.
    irish = BillingAddress(country="IE", vat_id="IE1234567T", vat_id_valid=True)
    assert tax_of("100.00", irish) == ("23.00", "VAT 23% (IE)")


def test_us_sales_tax_only_in_configured_states() -> None:
    # 99.99 x 0.0725 = 7.249275 -> 7.25.
    assert tax_of("99.99", BillingAddress(country="US", region="CA")) == (
        "7.25", "Sales tax 7.25% (US-CA)")
    assert tax_of("99.99", BillingAddress(country="US", region="OR")) == (
        "0.00", "No tax collected (US-OR)")
    assert tax_of("99.99", BillingAddress(country="US")) == ("0.00", "No tax collected (US)")
    assert tax_of("99.99", BillingAddress(country="JP")) == ("0.00", "No tax collected (JP)")


def test_tax_is_rounded_once_half_up_in_the_currency() -> None:
    # 10.10 x 0.05 = 0.505 -> 0.51 (half up, not to even).
    five = TaxTable.model_validate({"eu_vat": {"NL": "0.05"}})
    line = tax_line(subtotal=Decimal("10.10"), currency="EUR", address=DUTCH, table=five,
                    start=D("2025-06-01"), end=D("2025-07-01"))
    assert (line.quantity, line.unit_price, line.amount) == ("10.10", "0.05", "0.51")
    assert tax_of("1234", DUTCH, currency="JPY")[0] == "259"  # 259.14
    assert tax_of("-10.10", DUTCH)[0] == "-2.12"  # a credit note's tax: -2.121
    assert tax_rate(address=DUTCH, table=TABLE)[0] == Decimal("0.21")


def test_invoice_with_tax_keeps_lines_plus_tax_equal_to_total() -> None:
    # Seed 004 Daniel on 4 August (6 + 60 = 66.00) with a Dutch address: 21% = 13.86.
    plan = MauMinimumPlan(name="Attendance Pro", currency="USD", unit_price=Decimal(2),
                          minimum_users=3)
    lines = [minimum_line(plan, Period(D("2018-08-04"), D("2018-09-04"))),
             overage_line(plan, Period(D("2018-07-04"), D("2018-08-04")), active_users=33)]
    invoice = invoice_with_tax(team="team-daniel", invoice_date=D("2018-08-04"),
                               currency="USD", lines=lines, address=DUTCH, table=TABLE)
    assert (invoice.subtotal, invoice.tax, invoice.total) == ("66.00", "13.86", "79.86")
    tax = invoice.lines[-1]
    assert (tax.kind, tax.amount, tax.service_start, tax.service_end) == (
        "tax", "13.86", D("2018-07-04"), D("2018-09-04"))
    assert sum(Decimal(line.amount) for line in invoice.lines) == Decimal(invoice.total)


def test_invoice_with_tax_refuses_empty_or_taxed_lines() -> None:
    with pytest.raises(ValueError, match="has no lines"):
        invoice_with_tax(team="t", invoice_date=D("2025-06-01"), currency="USD", lines=[],
                         address=DUTCH, table=TABLE)
    line = tax_line(subtotal=Decimal(1), currency="USD", address=DUTCH, table=TABLE,
                    start=D("2025-06-01"), end=D("2025-07-01"))
    with pytest.raises(ValueError, match="lines already carry tax"):
        invoice_with_tax(team="t", invoice_date=D("2025-06-01"), currency="USD", lines=[line],
                         address=DUTCH, table=TABLE)


@pytest.mark.parametrize(
    ("model", "data", "message"),
    [
        (TaxTable, {"eu_vat": {"NL": "1.21"}}, "eu_vat.NL: Input should be less than 1"),
        (TaxTable, {"us_sales_tax": {"CA": "-0.01"}},
         "us_sales_tax.CA: Input should be greater than or equal to 0"),
        (TaxTable, {"eu_vat": {"nl": "0.21"}}, "eu_vat.nl.[key]: String should match pattern"),
        (TaxTable, {"vat": {}}, "vat: Extra inputs are not permitted"),
        (BillingAddress, {"country": "Netherlands"}, "country: String should match pattern"),
        (BillingAddress, {"country": "NL", "vat_id_valid": True},
         "Value error, vat_id: vat_id_valid is true but no VAT number is given"),
    ],
)
def test_tax_data_errors_name_the_field(
    model: type[TaxTable] | type[BillingAddress], data: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    err = caught.value.errors()[0]
    where = ".".join(map(str, err["loc"]))
    assert ((f"{where}: " if where else "") + err["msg"]).startswith(message)
