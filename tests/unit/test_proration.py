"""Proration conventions against the seeds' figures, and the term arithmetic under them."""

from __future__ import annotations

from datetime import date
from fractions import Fraction

import pytest

from invoicing.terms import Term, portion

D = date.fromisoformat

ANGELA = Term.beginning(D("2018-07-04"), months=12)  # seed 004: 4 Jul 2018 -> 4 Jul 2019
CYCLE_2023 = Term.beginning(D("2023-06-01"), months=12)  # seed 002: 1 Jun 2023 -> 1 Jun 2024


def test_term_runs_whole_anchor_months_clamped_to_short_months() -> None:
    term = Term.beginning(D("2024-01-31"), months=12)
    assert [term.anchor(k) for k in range(4)] == [
        D("2024-01-31"), D("2024-02-29"), D("2024-03-31"), D("2024-04-30")]
    assert term.end == D("2025-01-31")
    assert term.days == 366
    # The renewal keeps the anchor day, so a term that starts on a clamped date (28 Feb 2025,
    # anchor 29) still ends on the 29th when the month has one.
    clamped = Term(start=D("2025-02-28"), months=12, anchor_day=29)
    assert clamped.end == D("2026-02-28")
    assert Term(start=D("2027-02-28"), months=12, anchor_day=29).end == D("2028-02-29")
    assert ANGELA.following() == Term.beginning(D("2019-07-04"), months=12)
    assert ANGELA.contains(D("2018-07-04")) and not ANGELA.contains(D("2019-07-04"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start": D("2024-01-30"), "months": 1, "anchor_day": 31},
         "term start 2024-01-30 is not a billing date for anchor day 31 "
         r"\(that month's is 2024-01-31\)"),
        ({"start": D("2024-01-31"), "months": 0, "anchor_day": 31}, "term months must be >= 1"),
    ],
)
def test_bad_terms_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Term(**kwargs)  # type: ignore[arg-type]


def test_seed_004_angela_167_days_under_each_convention() -> None:
    # The seed prints "From 18 January 2019 until 4 July 2019 = 184 days = 5.49 months".
    # 18 Jan -> 4 Jul 2019 is 14 + 28 + 31 + 30 + 31 + 30 + 3 = 167 days, and it is 167 (not
    # 184) that gives 5.49: 167 x 12 / 365 = 5.4904 -> 5.49, while 184 x 12 / 365 = 6.05.
    on, end = D("2019-01-18"), D("2019-07-04")
    exact = portion(start=on, end=end, term=ANGELA, convention="exact_days")
    assert (exact.ratio, exact.basis) == (Fraction(167, 365), "167/365 days")
    jibble = portion(start=on, end=end, term=ANGELA, convention="months_2dp")
    assert (jibble.ratio, jibble.basis) == (Fraction(549, 1200), "5.49/12 months")
    # Calendar months: 18 Jan -> 4 Feb is 17 of the 31 days of [4 Jan, 4 Feb), then 5 whole
    # months to 4 Jul: 5 + 17/31 = 172/31 months.
    calendar = portion(start=on, end=end, term=ANGELA, convention="calendar_months")
    assert calendar.ratio == Fraction(172, 31) / 12
    assert calendar.basis == "~5.5484/12 calendar months"


def test_seed_002_half_a_year_under_each_convention() -> None:
    # The seed's "x 0.5 (proration for half a year)" is month reasoning: 6 of 12 months. In
    # this cycle exact days agree: 1 Dec 2023 -> 1 Jun 2024 = 183 days of 366 (the cycle
    # holds 29 Feb 2024), and 183/366 is exactly 1/2.
    for convention in ("exact_days", "months_2dp", "calendar_months"):
        share = portion(start=D("2023-12-01"), end=CYCLE_2023.end, term=CYCLE_2023,
                        convention=convention)
        assert share.ratio == Fraction(1, 2), convention


def test_a_span_outside_its_term_is_refused() -> None:
    with pytest.raises(ValueError, match="2019-07-04 to 2019-07-05 is not inside the term"):
        portion(start=D("2019-07-04"), end=D("2019-07-05"), term=ANGELA, convention="exact_days")
    with pytest.raises(ValueError, match="is not inside the term"):
        portion(start=D("2019-01-02"), end=D("2019-01-01"), term=ANGELA, convention="exact_days")
