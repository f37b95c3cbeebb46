from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from invoicing.money import (
    ROUNDING,
    exponent,
    format_amount,
    format_unit_price,
    line_amount,
    quantize,
    sum_amounts,
    zero,
)
from schemas.currency import CURRENCY_EXPONENTS


def test_rounding_is_half_up() -> None:
    assert ROUNDING == ROUND_HALF_UP


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("2.345", "USD", "2.35"),
        ("2.335", "USD", "2.34"),
        ("2.3449", "USD", "2.34"),
        ("0.005", "USD", "0.01"),
        ("-2.345", "USD", "-2.35"),
        ("0.5", "JPY", "1"),
        ("1.5", "JPY", "2"),
        ("2.5", "JPY", "3"),
        ("1.0005", "BHD", "1.001"),
        ("1.0004", "BHD", "1.000"),
        ("10", "USD", "10.00"),
        ("1E+2", "USD", "100.00"),
    ],
)
def test_quantize_half_up_at_the_boundary(amount: str, currency: str, expected: str) -> None:
    rounded = quantize(Decimal(amount), currency)
    assert rounded == Decimal(expected)
    assert format_amount(Decimal(amount), currency) == expected


def test_rounding_ignores_the_callers_decimal_context() -> None:
    with localcontext() as ctx:
        ctx.rounding = "ROUND_HALF_EVEN"
        ctx.prec = 3
        assert format_amount(Decimal("12345.675"), "USD") == "12345.68"


@pytest.mark.parametrize(("currency", "digits"), [("USD", 2), ("JPY", 0), ("BHD", 3), ("KWD", 3)])
def test_exponent_and_zero(currency: str, digits: int) -> None:
    assert exponent(currency) == digits
    assert zero(currency).as_tuple().exponent == -digits
    assert zero(currency) == 0


def test_zero_formats_by_exponent() -> None:
    assert format_amount(zero("USD"), "USD") == "0.00"
    assert format_amount(zero("JPY"), "JPY") == "0"
    assert format_amount(zero("BHD"), "BHD") == "0.000"


def test_negative_zero_is_plain_zero() -> None:
    assert format_amount(Decimal("-0.001"), "USD") == "0.00"


def test_unknown_currency_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown currency"):
        exponent("XXX")


@pytest.mark.parametrize(
    "call",
    [
        lambda: quantize(0.1, "USD"),  # type: ignore[arg-type]
        lambda: format_amount(2.5, "USD"),  # type: ignore[arg-type]
        lambda: format_unit_price(2.0, "USD"),  # type: ignore[arg-type]
        lambda: line_amount(3, 0.1, "USD"),  # type: ignore[arg-type]
        lambda: sum_amounts([Decimal(1), 0.5], "USD"),  # type: ignore[list-item]
    ],
)
def test_float_is_rejected(call: Callable[[], object]) -> None:
    with pytest.raises(TypeError, match="float"):
        call()


def test_non_finite_amount_is_rejected() -> None:
    with pytest.raises(ValueError, match="finite"):
        quantize(Decimal("NaN"), "USD")


@pytest.mark.parametrize(
    ("price", "currency", "expected"),
    [
        ("2", "USD", "2.00"),
        ("0.015", "USD", "0.015"),
        ("0.0150", "USD", "0.015"),
        ("5", "JPY", "5"),
    ],
)
def test_unit_price_keeps_sub_unit_digits(price: str, currency: str, expected: str) -> None:
    assert format_unit_price(Decimal(price), currency) == expected


def test_line_amount_rounds_the_exact_product_once() -> None:
    # Rounding the unit price first would give 3 x 0.02 = 0.06.
    assert line_amount(3, Decimal("0.015"), "USD") == Decimal("0.05")
    assert line_amount(28, Decimal("2"), "USD") == Decimal("56.00")


@given(
    amount=st.decimals(allow_nan=False, allow_infinity=False, places=6, max_value=10**12),
    currency=st.sampled_from(sorted(CURRENCY_EXPONENTS)),
)
def test_formatted_amounts_have_exactly_the_exponent_digits(amount: Decimal, currency: str) -> None:
    text = format_amount(amount, currency)
    digits = exponent(currency)
    if digits:
        assert len(text.rsplit(".", 1)[1]) == digits
    else:
        assert "." not in text
    assert abs(Decimal(text) - amount) <= Decimal(1).scaleb(-digits) / 2
