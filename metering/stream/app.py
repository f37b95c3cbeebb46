"""The Faust app: its topics, its agents and timers, and the context they share.

The agents (`activity.count_active_users`, `changes.record_billing_changes`,
`payments.record_billing_payments`) and the timers (`timers`, among them the usage alerts
check when the catalog has alerts) are module-level functions;
what they use reaches them through the app's `StreamContext` (see `context`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from faust.types import TopicT
from prometheus_client import CollectorRegistry

from aggregation import Store
from metering.alerts import alert_check
from metering.metrics import (
    AlertMetrics,
    ChangeMetrics,
    PaymentMetrics,
    TeamMetrics,
    WorkerMetrics,
)
from metering.settings import Settings
from metering.stream.activity import count_active_users
from metering.stream.batch import ActivityBatcher
from metering.stream.changes import record_billing_changes
from metering.stream.context import ChangeCheck, MeteringApp, PaymentCheck, StreamContext
from metering.stream.first_seen import calendars_from_catalog
from metering.stream.payments import record_billing_payments
from metering.stream.timers import (
    DEFAULT_LAG_INTERVAL_SECONDS,
    DEFAULT_TOP_TEAMS_INTERVAL_SECONDS,
    check_usage_alerts,
    forget_finished,
    refresh_lag,
    refresh_top_teams,
)
from schemas import Catalog

__all__ = ["create_app"]


def create_app(
    settings: Settings, *, store: Store, catalog: Catalog, check_change: ChangeCheck,
    check_payment: PaymentCheck, registry: CollectorRegistry,
) -> MeteringApp:
    app = MeteringApp(
        settings.app_id,
        broker=settings.broker_url,
        web_enabled=False,
        datadir=str(settings.work_dir / f"{settings.app_id}-data"),
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=settings.session_timeout_seconds / 5,
    )

    def topic(name: str) -> TopicT:
        return app.topic(name, key_type=bytes, value_type=bytes, partitions=settings.partitions)

    alert_metrics = AlertMetrics.create(registry)  # even unused, so the series exist
    alerts = alert_check(settings, store, catalog, alert_metrics)

    app.stream_context = StreamContext(
        settings=settings,
        store=store,
        executor=ThreadPoolExecutor(max_workers=1, thread_name_prefix="store"),
        batcher=ActivityBatcher(calendars=calendars_from_catalog(catalog),
                                dedupe_window=settings.dedupe_window, grace=settings.grace,
                                count_teams=settings.top_teams_metric > 0),
        metrics=WorkerMetrics.create(registry),
        change_metrics=ChangeMetrics.create(registry),
        payment_metrics=PaymentMetrics.create(registry),
        team_metrics=TeamMetrics.create(registry) if settings.top_teams_metric > 0 else None,
        check_change=check_change,
        check_payment=check_payment,
        rejected_topic=topic(settings.rejected_topic),
        changes_rejected_topic=topic(settings.changes_rejected_topic),
        payments_rejected_topic=topic(settings.payments_rejected_topic),
        alerts=alerts,
        alerts_executor=(None if alerts is None
                         else ThreadPoolExecutor(max_workers=1, thread_name_prefix="alerts")),
    )
    app.agent(topic(settings.events_topic), name="count_active_users")(count_active_users)
    app.agent(topic(settings.changes_topic), name="record_billing_changes")(
        record_billing_changes
    )
    app.agent(topic(settings.payments_topic), name="record_billing_payments")(
        record_billing_payments
    )
    app.on_partitions_revoked.connect(forget_finished)
    app.timer(DEFAULT_LAG_INTERVAL_SECONDS)(refresh_lag)
    if settings.top_teams_metric > 0:
        app.timer(DEFAULT_TOP_TEAMS_INTERVAL_SECONDS)(refresh_top_teams)
    if alerts is not None:
        app.timer(settings.alerts_interval_seconds)(check_usage_alerts)
    return app
