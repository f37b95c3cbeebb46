"""Money as Decimal in a currency's minor units (ISO 4217 exponent); floats are refused.

Every rounding of the billing rules is here, and every one is ROUNDING (half up, away from
zero on a tie): amounts to the currency's minor unit, once per line; exact rationals (a
price x a share of a term) to some places; prices and rates are kept exact, never rounded.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Context, Decimal, DivisionByZero, Inexact, InvalidOperation
from fractions import Fraction
from typing import Final

from schemas import CURRENCY_EXPONENTS

__all__ = [
    "ROUNDING",
    "exponent",
    "format_amount",
    "format_percent",
    "format_rate",
    "format_unit_price",
    "line_amount",
    "quantize",
    "round_fraction",
    "scaled_amount",
    "scaled_price",
    "sum_amounts",
    "zero",
]

ROUNDING: Final = ROUND_HALF_UP

# Digits kept before any rounding: far beyond any price x count the catalog can hold.
_PRECISION: Final = 60
# Both contexts ignore the caller's thread context. Trapping Inexact makes a product that
# would need rounding before the single per-line quantize fail loudly instead of drifting.
_ROUND: Final = Context(
    prec=_PRECISION, rounding=ROUNDING, traps=[InvalidOperation, DivisionByZero]
)
_EXACT: Final = Context(
    prec=_PRECISION, rounding=ROUNDING, traps=[InvalidOperation, DivisionByZero, Inexact]
)


def _require_decimal(amount: object) -> Decimal:
    if isinstance(amount, float):
        raise TypeError(f"float {amount!r} is not money; pass a Decimal")
    if not isinstance(amount, Decimal):
        raise TypeError(f"{type(amount).__name__} is not money; pass a Decimal")
    if not amount.is_finite():
        raise ValueError(f"{amount} is not a finite amount")
    return amount


def exponent(currency: str) -> int:
    try:
        return CURRENCY_EXPONENTS[currency]
    except KeyError:
        raise ValueError(f"unknown currency {currency!r} (no ISO 4217 exponent)") from None


def _minor_unit(currency: str) -> Decimal:
    return Decimal(1).scaleb(-exponent(currency))


def quantize(amount: Decimal, currency: str) -> Decimal:
    """Round to the currency's minor unit, half up; a negative zero becomes zero."""
    rounded = _require_decimal(amount).quantize(
        _minor_unit(currency), rounding=ROUNDING, context=_ROUND
    )
    return rounded.copy_abs() if rounded.is_zero() else rounded


def zero(currency: str) -> Decimal:
    return quantize(Decimal(0), currency)


def format_amount(amount: Decimal, currency: str) -> str:
    """Plain decimal string with exactly the currency's exponent digits ("66.00", "500")."""
    return f"{quantize(amount, currency):f}"


def format_unit_price(price: Decimal, currency: str) -> str:
    """At least the currency's digits, more when the price is finer ("2.00", "0.015").

    A unit price is not an amount: rounding it would make quantity x price disagree with
    the line amount, which is rounded once from the exact product.
    """
    exact = _require_decimal(price)
    if quantize(exact, currency) == exact:
        return format_amount(exact, currency)
    return f"{exact.normalize(context=_EXACT):f}"


def line_amount(quantity: int, unit_price: Decimal, currency: str) -> Decimal:
    """quantity x unit_price computed exactly, then rounded once."""
    product = _EXACT.multiply(Decimal(quantity), _require_decimal(unit_price))
    return quantize(product, currency)


def sum_amounts(amounts: Iterable[Decimal], currency: str) -> Decimal:
    """Exact sum of already rounded amounts, starting from the currency's zero."""
    total = zero(currency)
    for amount in amounts:
        total = _EXACT.add(total, quantize(amount, currency))
    return total


def scaled_price(price: Decimal, factor: int) -> Decimal:
    """price x a whole factor (a term's months), exact: a price is never rounded, only the
    amount a line computes from it."""
    return _EXACT.multiply(_require_decimal(price), Decimal(factor))


def round_fraction(value: Fraction, *, places: int) -> Decimal:
    """An exact rational rounded once, ROUNDING, to `places` decimals.

    Fractions, not Decimals: a share of a term such as 167/365 has no exact Decimal, and
    turning it into one first would round twice."""
    whole, rest = divmod(value * 10**places, 1)
    # A stand-in one digit longer that sits where `rest` does between 0, a half and 1 (at 0,
    # 2, 5 or 8 tenths): rounding it gives what rounding the exact value would, in any mode.
    if rest == 0:
        tenths = 0
    elif rest < Fraction(1, 2):
        tenths = 2
    elif rest == Fraction(1, 2):
        tenths = 5
    else:
        tenths = 8
    stand_in = Decimal(whole * 10 + tenths).scaleb(-places - 1, context=_EXACT)
    return stand_in.quantize(Decimal(1).scaleb(-places), rounding=ROUNDING, context=_ROUND)


def scaled_amount(amount: Decimal, factor: Fraction, *, currency: str) -> Decimal:
    """amount x factor computed exactly, then rounded once, half up, to the minor unit."""
    if not isinstance(amount, Decimal):
        raise TypeError(f"{type(amount).__name__} is not money; pass a Decimal")
    exact = Fraction(amount) * factor
    return quantize(round_fraction(exact, places=exponent(currency)), currency)


def format_rate(rate: Decimal) -> str:
    """A tax rate as given, without trailing zeros ("0.21"); rates are never rounded."""
    return f"{_require_decimal(rate).normalize(context=_EXACT):f}"


def format_percent(rate: Decimal) -> str:
    """A tax rate as a percentage ("21%", "7.25%")."""
    percent = _EXACT.multiply(_require_decimal(rate), Decimal(100))
    return f"{percent.normalize(context=_EXACT):f}%"
