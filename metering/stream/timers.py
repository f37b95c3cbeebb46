"""What the worker does on a timer, and the hook that keeps its measures honest.

Every few seconds the lag of each assigned partition of the events topic (high watermark of
the last fetch minus the offset after the last message this worker finished); with
METERING_TOP_TEAMS_METRIC, the current-period MAU of the largest teams, read from the store;
with usage alerts in the catalog, every METERING_ALERTS_INTERVAL_SECONDS a round of
metering/alerts.py in its own thread (a failed round is one log line; the next one comes).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from aiokafka.errors import KafkaError
from faust.exceptions import ConsumerNotStarted
from faust.types import TP, AppT

from aggregation import Store, StoreError
from metering.metrics import top_teams
from metering.stream.context import context_of

__all__ = [
    "DEFAULT_LAG_INTERVAL_SECONDS",
    "DEFAULT_TOP_TEAMS_INTERVAL_SECONDS",
    "check_usage_alerts",
    "consumer_lag",
    "forget_finished",
    "refresh_lag",
    "refresh_top_teams",
]

log = logging.getLogger(__name__)

DEFAULT_LAG_INTERVAL_SECONDS = 5.0
DEFAULT_POSITION_TIMEOUT_SECONDS = 2.0
DEFAULT_TOP_TEAMS_INTERVAL_SECONDS = 30.0


def consumer_lag(
    highwaters: Mapping[TP, int | None], consumed: Mapping[TP, int | None]
) -> dict[tuple[str, int], int]:
    """Messages behind the high watermark per (topic, partition); a partition without a
    fetch yet (no high watermark) or without a known position has no value."""
    lag: dict[tuple[str, int], int] = {}
    for tp, highwater in highwaters.items():
        position = consumed.get(tp)
        if highwater is not None and position is not None:
            lag[(tp.topic, tp.partition)] = max(highwater - position, 0)
    return lag


def forget_finished(sender: AppT, /, *args: Any, signal: Any, **kwargs: Any) -> None:
    """On revocation: another worker may move a partition on before it comes back."""
    context_of(sender).finished.clear()


async def refresh_lag(app: AppT) -> None:
    context = context_of(app)
    consumer = app.consumer
    try:
        # Faust also assigns its internal assignor topic; only the events topic lags.
        assigned = {
            tp for tp in consumer.assignment() if tp.topic == context.settings.events_topic
        }
        positions: dict[TP, int | None] = {tp: context.finished.get(tp) for tp in assigned}
        for tp, position in positions.items():
            if position is None:
                positions[tp] = await asyncio.wait_for(
                    consumer.position(tp), DEFAULT_POSITION_TIMEOUT_SECONDS
                )
        highwaters = {tp: consumer.highwater(tp) for tp in assigned}
    # A rebalance can revoke a partition between these calls; aiokafka then asserts
    # (highwater) or raises, and the next tick reads the new assignment.
    except (ConsumerNotStarted, KafkaError, AssertionError, TimeoutError) as exc:
        log.debug("consumer lag not refreshed: %r", exc)
        return
    context.metrics.set_lag(consumer_lag(highwaters, positions))


def _read_mau(store: Store, periods: Mapping[str, date]) -> dict[str, int]:
    return {team: store.mau(team, start) for team, start in periods.items()}


async def refresh_top_teams(app: AppT) -> None:
    context = context_of(app)
    if context.team_metrics is None:  # the timer only runs with team metrics on
        return
    limit = context.settings.top_teams_metric
    # Rank by this worker's memory (teams of its partitions, first seen since it started),
    # then publish the store's exact MAU of the chosen teams.
    counts = context.batcher.current_counts(datetime.now(UTC))
    ranked = top_teams({team: n for (team, _), n in counts.items()}, limit)
    periods = {team: start for (team, start) in counts if team in ranked}
    try:
        mau = await asyncio.get_running_loop().run_in_executor(
            context.executor, _read_mau, context.store, periods
        )
    except StoreError as exc:
        log.warning("team MAU not refreshed: %s", exc)
        return
    context.team_metrics.publish(mau, limit=limit)


async def check_usage_alerts(app: AppT) -> None:
    context = context_of(app)
    if context.alerts is None or context.alerts_executor is None:
        return
    try:
        await asyncio.get_running_loop().run_in_executor(
            context.alerts_executor, context.alerts, datetime.now(UTC))
    except Exception as exc:  # a failed round must not end the timer; the next one retries
        log.warning("usage alerts not checked: %s", " ".join(str(exc).split()) or repr(exc))
