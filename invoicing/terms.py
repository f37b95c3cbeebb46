"""Prepaid terms and the share of one that a span is worth (proration).

The rule: a span [start, end) of a term is worth days in the span / days in the term of the
term's price ("exact_days"); the amount is computed exactly and rounded once, half up, to the
currency's minor unit (invoicing/lines.py). Two month-based conventions reproduce Jibble's
published figures:

- months_2dp (seed 004): the span's days become months of the term rounded to 2 places
  first: 167 of 365 days = 5.4904 -> 5.49 months, $30/month x 5.49 = $164.70, where exact days
  give 360 x 167/365 = 164.7123 -> $164.71.
- calendar_months (seed 002 "x 0.5 (proration for half a year)"): each whole anchor month is
  one month, a partial month counts its days over that month's days.

A term is whole anchor months: anchor dates come from the anchor day and are clamped to short
months (schemas/periods.py), so a term starting 31 Jan 2024 with anchor 31 ends on 31 Jan
2025 and its second month is [29 Feb, 31 Mar).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from fractions import Fraction
from typing import Final

from invoicing.money import round_fraction
from schemas import Proration, anchor_date

__all__ = ["Portion", "Term", "portion"]

# Places of the months a months_2dp share rounds to (Jibble's "5.49 months"), and of the
# approximate months a calendar_months share shows when they are not whole.
_MONTHS_2DP_PLACES: Final = 2
_SHOWN_MONTHS_PLACES: Final = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class Term:
    """A prepaid term of `months` anchor months from `start` (an anchor date): [start, end)."""

    start: date
    months: int
    anchor_day: int

    def __post_init__(self) -> None:
        if self.months < 1:
            raise ValueError(f"term months must be >= 1, got {self.months}")
        expected = anchor_date(self.start.year, self.start.month, anchor_day=self.anchor_day)
        if self.start != expected:
            raise ValueError(
                f"term start {self.start} is not a billing date for anchor day "
                f"{self.anchor_day} (that month's is {expected})"
            )

    @classmethod
    def beginning(cls, start: date, *, months: int) -> Term:
        """The term whose anchor day is `start`'s day."""
        return cls(start=start, months=months, anchor_day=start.day)

    def anchor(self, k: int) -> date:
        """The k-th anchor date of the term; anchor(0) is the start, anchor(months) the end."""
        year, month = divmod(self.start.year * 12 + self.start.month - 1 + k, 12)
        return anchor_date(year, month + 1, anchor_day=self.anchor_day)

    @property
    def end(self) -> date:
        return self.anchor(self.months)

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def following(self) -> Term:
        """The renewal term, starting where this one ends."""
        return Term(start=self.end, months=self.months, anchor_day=self.anchor_day)

    def contains(self, day: date) -> bool:
        return self.start <= day < self.end


@dataclass(frozen=True, slots=True, kw_only=True)
class Portion:
    """The share `ratio` of a term that [start, end) is worth; `basis` says how, for people."""

    start: date
    end: date
    ratio: Fraction
    basis: str


def _months_into(term: Term, day: date) -> Fraction:
    """Calendar months from the term's start to `day`: whole anchor months plus the days of
    the partial one over that month's days."""
    for k in range(term.months):
        low, high = term.anchor(k), term.anchor(k + 1)
        if day < high:
            return k + Fraction((day - low).days, (high - low).days)
    return Fraction(term.months)


def portion(*, start: date, end: date, term: Term, convention: Proration) -> Portion:
    """The share of `term` that [start, end) is worth under `convention` (see module doc)."""
    if not term.start <= start <= end <= term.end:
        raise ValueError(f"{start} to {end} is not inside the term {term.start} to {term.end}")
    days = (end - start).days
    if convention == "exact_days":
        return Portion(start=start, end=end, ratio=Fraction(days, term.days),
                       basis=f"{days}/{term.days} days")
    if convention == "months_2dp":
        exact_months = Fraction(days * term.months, term.days)
        months = round_fraction(exact_months, places=_MONTHS_2DP_PLACES)
        return Portion(start=start, end=end, ratio=Fraction(months) / term.months,
                       basis=f"{months}/{term.months} months")
    exact = _months_into(term, end) - _months_into(term, start)
    shown = (f"{exact.numerator}" if exact.denominator == 1
             else f"~{round_fraction(exact, places=_SHOWN_MONTHS_PLACES)}")
    return Portion(start=start, end=end, ratio=exact / term.months,
                   basis=f"{shown}/{term.months} calendar months")

