"""One module per plan kind: MAU (seed 001), MAU with a minimum (seed 004), licences (seed
004), seats (seed 002), tiers and add-ons (seeds 000 and 003) and their subscriptions.

The close rates a plan rated from usage with `rate_usage`; the schedule (invoicing/schedule.py)
replays the others with the holdings and subscriptions below."""

from invoicing.plans.licences import (
    Holding,
    add_licences,
    buy_licences,
    reduce_licences,
    renew_licences,
)
from invoicing.plans.seats import check_members, renew_seats
from invoicing.plans.subscription import Subscription, apply_change, renew, start_subscription
from invoicing.plans.tiers import first_month_line
from invoicing.plans.usage import rate_usage

__all__ = [
    "Holding",
    "Subscription",
    "add_licences",
    "apply_change",
    "buy_licences",
    "check_members",
    "first_month_line",
    "rate_usage",
    "reduce_licences",
    "renew",
    "renew_licences",
    "renew_seats",
    "start_subscription",
]
