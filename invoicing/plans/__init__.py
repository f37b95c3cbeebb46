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
from invoicing.plans.subscription import (
    DEFAULT_RETENTION_DAYS,
    Subscription,
    SubscriptionStatus,
    Takeover,
    advance,
    apply_change,
    next_transition,
    renew,
    start_subscription,
    take_over,
)
from invoicing.plans.tiers import first_month_line
from invoicing.plans.usage import rate_usage

__all__ = [
    "DEFAULT_RETENTION_DAYS",
    "Holding",
    "Subscription",
    "SubscriptionStatus",
    "Takeover",
    "add_licences",
    "advance",
    "apply_change",
    "buy_licences",
    "check_members",
    "first_month_line",
    "next_transition",
    "rate_usage",
    "reduce_licences",
    "renew",
    "renew_licences",
    "renew_seats",
    "start_subscription",
    "take_over",
]
