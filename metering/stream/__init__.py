"""The Faust app and its agents: activity events into first-seen rows, billing changes into
each team's history, payment outcomes into its payments. Billing rules reach the change and
payment agents by injection (`ChangeCheck`, `PaymentCheck`); the agents' batch logic
(`ActivityBatcher`) and dependencies (`StreamContext`) stand apart from Faust so that they can
be tested without a broker."""

from __future__ import annotations

from metering.stream.app import create_app
from metering.stream.batch import ActivityBatcher, BatchPlan
from metering.stream.context import (
    ChangeCheck,
    MeteringApp,
    PaymentCheck,
    StreamContext,
    context_of,
)

__all__ = [
    "ActivityBatcher",
    "BatchPlan",
    "ChangeCheck",
    "MeteringApp",
    "PaymentCheck",
    "StreamContext",
    "context_of",
    "create_app",
]
