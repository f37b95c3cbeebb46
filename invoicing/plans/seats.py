"""Seed 002 per-seat plans, monthly or annual: prepaid licences with member rules.

Seats are bought up front (`buy_licences`, after the checkout's SeatOrder refused fewer
seats than members) and must hold every current member (owner included; archived members
free their seat): 50 seats x $2.49 x 12 = $1494. Added seats are prorated to the cycle's end
and charged at once (`add_licences`: 10 x $2.49 x 12 x 0.5 = $149.40 on 1 Dec 2023). Seats are
never refunded; at renewal they reset to the member count (10 bought, 5 members -> 5).
"""

from __future__ import annotations

from dataclasses import replace

from invoicing.errors import CountRefused
from invoicing.plans.licences import Holding, renew_licences
from schemas import InvoiceLine, SeatPlan, seat_shortage

__all__ = ["check_members", "renew_seats"]


def check_members(holding: Holding, *, members: int) -> None:
    """Refuse a member count the seats cannot hold (e.g. before adding someone)."""
    shortage = seat_shortage(seats=holding.units, members=members)
    if shortage:
        raise CountRefused(f"{shortage}; add seats first")


def renew_seats(*, plan: SeatPlan, holding: Holding, members: int) -> tuple[Holding, InvoiceLine]:
    """Renew at the member count on the renewal date, whatever was bought before."""
    check_members(holding, members=members)
    return renew_licences(plan=plan, holding=replace(holding, renewal_units=members))
