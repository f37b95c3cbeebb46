"""ISO 4217 minor-unit exponents for the currencies the catalog accepts."""

from __future__ import annotations

__all__ = [
    "CURRENCY_EXPONENTS",
]

CURRENCY_EXPONENTS: dict[str, int] = {
    "AUD": 2, "BRL": 2, "CAD": 2, "CHF": 2, "CNY": 2, "CZK": 2, "DKK": 2, "EUR": 2,
    "GBP": 2, "HKD": 2, "HUF": 2, "INR": 2, "JPY": 0, "KRW": 0, "MXN": 2, "NOK": 2,
    "NZD": 2, "PLN": 2, "SEK": 2, "SGD": 2, "USD": 2, "ZAR": 2, "BHD": 3, "KWD": 3,
}
