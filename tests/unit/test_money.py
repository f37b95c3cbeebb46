from __future__ import annotations

import math
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal, Inexact, localcontext
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from invoicing.money import (
    ROUNDING,
    exponent,
    format_amount,
    format_percent,
    format_rate,
    format_unit_price,
    line_amount,
    quantize,
    round_fraction,
    scaled_amount,
    scaled_price,
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
        lambda: scaled_price(1.5, 12),  # type: ignore[arg-type]
        lambda: format_rate(0.21),  # type: ignore[arg-type]
        lambda: format_percent(0.21),  # type: ignore[arg-type]
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


@pytest.mark.parametrize(
    ("amount", "factor", "currency", "expected"),
    [
        # 360 x 167/365 = 164.7123... -> 164.71 (rounded once, from the exact rational).
        (Decimal("360"), Fraction(167, 365), "USD", Decimal("164.71")),
        # Ties go away from zero: 0.25 x 1/2 = 0.125 -> 0.13, and -0.125 -> -0.13.
        (Decimal("0.25"), Fraction(1, 2), "USD", Decimal("0.13")),
        (Decimal("-0.25"), Fraction(1, 2), "USD", Decimal("-0.13")),
        (Decimal("1001"), Fraction(1, 2), "JPY", Decimal("501")),
        (Decimal("1.001"), Fraction(1, 2), "BHD", Decimal("0.501")),
        (Decimal("-0.001"), Fraction(1, 3), "USD", Decimal("0.00")),
    ],
)
def test_scaled_amount_rounds_the_exact_product_once_half_up(
    amount: Decimal, factor: Fraction, currency: str, expected: Decimal
) -> None:
    result = scaled_amount(amount, factor, currency=currency)
    assert result == expected
    assert str(result) == str(expected)  # the currency's exponent, and no negative zero


def test_scaled_amount_refuses_floats() -> None:
    with pytest.raises(TypeError, match="float is not money"):
        scaled_amount(0.1, Fraction(1), currency="USD")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "places", "expected"),
    [
        (Fraction(167 * 12, 365), 2, "5.49"),  # seed 004's months: 5.4904 -> 5.49
        (Fraction(172, 31), 4, "5.5484"),
        (Fraction(1, 8), 2, "0.13"),  # a tie goes away from zero
        (Fraction(-1, 8), 2, "-0.13"),
        (Fraction(6), 2, "6.00"),
        (Fraction(5, 2), 0, "3"),
    ],
)
def test_round_fraction_rounds_the_exact_rational_once(
    value: Fraction, places: int, expected: str
) -> None:
    assert str(round_fraction(value, places=places)) == expected


@given(
    value=st.fractions(max_denominator=10**6).filter(lambda v: abs(v) < 10**12),
    places=st.integers(min_value=0, max_value=6),
)
def test_round_fraction_is_half_up_on_the_exact_value(value: Fraction, places: int) -> None:
    # Half up, away from zero: the nearest multiple of 10^-places, a tie taking the larger
    # magnitude; rounding the exact rational, never a Decimal approximation of it.
    units = math.floor(abs(value) * 10**places + Fraction(1, 2))
    rounded = round_fraction(value, places=places)
    assert abs(rounded) == Decimal(units).scaleb(-places)
    assert rounded.as_tuple().exponent == -places


def test_a_price_times_the_months_of_its_term_is_exact() -> None:
    assert scaled_price(Decimal("2.49"), 12) == Decimal("29.88")
    assert str(scaled_price(Decimal("1.375"), 12)) == "16.500"  # a price keeps its digits
    with pytest.raises(Inexact):
        scaled_price(Decimal("1." + "3" * 60), 12)  # a price is never rounded


@pytest.mark.parametrize(
    ("rate", "text", "percent"),
    [("0.21", "0.21", "21%"), ("0.0725", "0.0725", "7.25%"), ("0.190", "0.19", "19%"),
     ("0", "0", "0%")],
)
def test_rates_are_shown_as_given(rate: str, text: str, percent: str) -> None:
    assert (format_rate(Decimal(rate)), format_percent(Decimal(rate))) == (text, percent)


def test_rates_ignore_the_callers_decimal_context() -> None:
    with localcontext() as ctx:
        ctx.prec = 3
        assert format_percent(Decimal("0.08875")) == "8.875%"
        assert format_rate(Decimal("0.08875")) == "0.08875"
