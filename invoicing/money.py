"""Money as Decimal in a currency's minor units (ISO 4217 exponent); floats are refused."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Context, Decimal, DivisionByZero, Inexact, InvalidOperation
from typing import Final

from schemas.currency import CURRENCY_EXPONENTS

__all__ = [
    "ROUNDING",
    "exponent",
    "format_amount",
    "format_unit_price",
    "line_amount",
    "quantize",
    "sum_amounts",
    "zero",
]

ROUNDING: Final = ROUND_HALF_UP

# Both contexts ignore the caller's thread context. Trapping Inexact makes a product that
# would need rounding before the single per-line quantize fail loudly instead of drifting.
_ROUND: Final = Context(prec=60, rounding=ROUNDING, traps=[InvalidOperation, DivisionByZero])
_EXACT: Final = Context(
    prec=60, rounding=ROUNDING, traps=[InvalidOperation, DivisionByZero, Inexact]
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
