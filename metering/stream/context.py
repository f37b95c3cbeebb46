"""What the agents, timers and hooks of one app share, bound to the app itself.

Agents are module-level functions that Faust calls with a stream; they find their
dependencies through `stream.app`, which is the same app in a worker and under
`agent.test_context()`. Nothing lives in module globals, so two apps never share state.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Protocol

import faust
from faust.types import TP, AppT, TopicT

from aggregation import Store, StoredInvoice
from metering.alerts import AlertCheck
from metering.metrics import ChangeMetrics, PaymentMetrics, TeamMetrics, WorkerMetrics
from metering.settings import Settings
from metering.stream.batch import ActivityBatcher
from schemas import BillingChange, PaymentEvent, Rejection

__all__ = ["ChangeCheck", "MeteringApp", "PaymentCheck", "StreamContext", "context_of"]


class ChangeCheck(Protocol):
    """The billing rule deciding whether a change may join the team's stored history: why
    not, or None. Injected, so the stream knows no billing rule."""

    def __call__(self, change: BillingChange, *, raw: bytes, stored: Sequence[BillingChange],
                 issued: Sequence[StoredInvoice], payments: Sequence[PaymentEvent] = ()
                 ) -> Rejection | None: ...


class PaymentCheck(Protocol):
    """The billing rule deciding whether a payment outcome may be stored, given the stored
    invoice it names (None: none, or it names none): why not, or None. Injected, as
    `ChangeCheck`."""

    def __call__(self, payment: PaymentEvent, *, raw: bytes,
                 invoice: StoredInvoice | None) -> Rejection | None: ...


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamContext:
    """Everything the agents and timers use beyond their stream, built once by create_app."""

    settings: Settings
    store: Store
    # The store is blocking: every call runs here, one at a time, off the event loop.
    executor: Executor
    batcher: ActivityBatcher
    metrics: WorkerMetrics
    change_metrics: ChangeMetrics
    payment_metrics: PaymentMetrics
    team_metrics: TeamMetrics | None  # None unless METERING_TOP_TEAMS_METRIC is set
    check_change: ChangeCheck
    check_payment: PaymentCheck
    rejected_topic: TopicT
    changes_rejected_topic: TopicT
    payments_rejected_topic: TopicT
    # Usage alerts (metering/alerts.py), None for a catalog without any: the check, and a
    # thread of its own, so that a round's reads and publish never wait in front of (or
    # behind) the agents' store calls.
    alerts: AlertCheck | None = None
    alerts_executor: Executor | None = None
    # Offset after the last message finished per partition of the events topic: what a
    # commit will cover, and so the position the lag is measured from.
    finished: dict[TP, int] = field(default_factory=dict)


class MeteringApp(faust.App):
    """A Faust app carrying the `StreamContext` its agents and timers read."""

    stream_context: StreamContext


def context_of(app: AppT) -> StreamContext:
    """The context `create_app` bound to `app`."""
    if not isinstance(app, MeteringApp):
        raise TypeError(f"{app!r} has no stream context: build the app with create_app")
    return app.stream_context
