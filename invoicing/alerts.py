"""Usage alerts: which of an account's thresholds its open period has crossed (pure).

An account's `alerts` (schemas.UsageAlert) compare the open period's active users (`mau`,
`included_share` of the plan's included users) or the running estimate of its next invoice
(`estimate`, invoicing.estimate: the same rating as the close) with a threshold. A threshold
is crossed when the observed value is at least the threshold, so a crossing stays crossed
as usage grows within the period; each crossing has an id per team, threshold and period,
so that whoever publishes it publishes it once (metering/alerts.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from fractions import Fraction

from schemas import Account, MauPlan, Plan, UsageAlert

__all__ = ["Crossing", "Running", "alert_limit", "crossing_id", "crossings"]


@dataclass(frozen=True, slots=True)
class Running:
    """The running estimate of an account's next invoice: its total and currency."""

    total: Decimal
    currency: str


@dataclass(frozen=True, slots=True)
class Crossing:
    """A threshold of `team` crossed in the period [period_start, period_end): `limit` is
    the threshold (active users, or an amount in `currency`), `observed` what was seen."""

    team: str
    alert: UsageAlert
    period_start: date
    period_end: date
    limit: int | Decimal
    observed: int | Decimal
    currency: str | None = None

    @property
    def id(self) -> str:
        return crossing_id(self.team, self.alert, self.period_start)


def crossing_id(team: str, alert: UsageAlert, period_start: date) -> str:
    """The id of `team`'s crossing of `alert` in the period starting `period_start`, the
    same in every process and run (`acme/alert/mau>=100/2026-12-01`)."""
    return f"{team}/alert/{alert.id}/{period_start.isoformat()}"


def _included_users(plan: Plan) -> int:
    """The active users `plan` includes in its base fee (0 for kinds that include none)."""
    return plan.included_users if isinstance(plan, MauPlan) else 0


def alert_limit(alert: UsageAlert, plan: Plan) -> int | Decimal:
    """The value `alert` compares with: active users for `mau` and `included_share` (the
    share of the plan's included users, rounded up: the least count that is at least that
    share, exactly), an amount for `estimate`."""
    if alert.mau is not None:
        return alert.mau
    if alert.included_share is not None:
        # An exact product and integer ceiling: a user count, not an amount to round.
        return math.ceil(Fraction(alert.included_share) * _included_users(plan))
    assert alert.estimate is not None  # noqa: S101 - UsageAlert holds exactly one
    return alert.estimate.amount


def crossings(account: Account, plan: Plan, *, period_start: date, period_end: date,
              mau: int, estimate: Running | None,
              alerts: Sequence[UsageAlert] | None = None) -> list[Crossing]:
    """The thresholds of `account` (or only `alerts` of them) crossed in its open period
    [period_start, period_end), with `mau` active users so far and the running `estimate`
    (None: not known, or nothing more will be billed; an estimate thresholds then waits).
    An estimate in another currency than the threshold's (a team that moved plans) crosses
    nothing."""
    found: list[Crossing] = []
    for alert in account.alerts if alerts is None else alerts:
        limit = alert_limit(alert, plan)
        if alert.estimate is None:
            if mau >= limit:
                found.append(Crossing(account.team, alert, period_start, period_end, limit,
                                      mau))
        elif (estimate is not None and estimate.currency == alert.estimate.currency
              and estimate.total >= limit):
            found.append(Crossing(account.team, alert, period_start, period_end, limit,
                                  estimate.total, estimate.currency))
    return found
