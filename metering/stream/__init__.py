"""The Faust app and its agents: activity events into first-seen rows, billing changes into
each team's history. Billing rules reach the change agent by injection (`ChangeCheck`); the
agents' batch logic (`ActivityBatcher`) and dependencies (`StreamContext`) stand apart from
Faust so that they can be tested without a broker."""

from __future__ import annotations

from metering.stream.app import create_app
from metering.stream.batch import ActivityBatcher, BatchPlan
from metering.stream.context import ChangeCheck, MeteringApp, StreamContext, context_of

__all__ = [
    "ActivityBatcher",
    "BatchPlan",
    "ChangeCheck",
    "MeteringApp",
    "StreamContext",
    "context_of",
    "create_app",
]
