"""`metering serve`: the read API, HTTP ingest of CloudEvents (POST /v1/events, produced to
the events topic of METERING_BROKER_URL) and /metrics on one port, plus background jobs.

Every `METERING_CLOSE_INTERVAL_SECONDS` (0: never) a thread runs the close of every catalog
team as of now, so due invoices are issued without a cron job, and, when the catalog has
usage alerts, another checks them as the workers do (metering/alerts.py: whichever process
takes the alerts lease publishes a crossing, once); with
`METERING_TOP_TEAMS_METRIC` N > 0 another refreshes the current-period MAU gauge of the N
largest catalog teams. A failed run is one log line; the job goes on at its next turn.
Without bearer tokens the API is open, so it only starts on a loopback address.

The API's statements wait at most `METERING_API_STORE_TIMEOUT_SECONDS` on a ClickHouse server,
so a hung store costs a request a few seconds and a 503; the periodic close shares the
connections but keeps the close's longer wait (`METERING_STORE_TIMEOUT_SECONDS`) for its set
queries and inserts.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from aggregation import Store, with_timeout
from metering.alerts import AlertCheck, alert_check
from metering.closing import run_close
from metering.kafka_io import ensure_topics
from metering.lease import LeaseBusy
from metering.metrics import AlertMetrics, CloseMetrics, TeamMetrics
from metering.runtime import load_settings_catalog, open_ready_store
from metering.settings import Settings
from schemas import Catalog

if TYPE_CHECKING:  # the web stack is imported only when serving
    from metering.api.app import Clock

__all__ = [
    "DEFAULT_TEAM_METRICS_INTERVAL_SECONDS",
    "Periodic",
    "exposure_problem",
    "periodic_alerts",
    "port_number",
    "run_serve",
    "serve",
]

log = logging.getLogger(__name__)

EXIT_USAGE = 2
DEFAULT_TEAM_METRICS_INTERVAL_SECONDS = 60.0
DEFAULT_JOB_STOP_TIMEOUT_SECONDS = 5.0


def port_number(text: str) -> int:
    """argparse type of --port: a TCP port, 0 for any free one."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return port


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name may resolve to anything


def exposure_problem(settings: Settings) -> str | None:
    """Why serving as configured would expose the API without authentication."""
    if settings.api_tokens or _loopback(settings.api_host):
        return None
    return (f"no API tokens: refusing to serve on {settings.api_host} without authentication; "
            "set METERING_API_TOKENS (comma-separated bearer tokens) or use a loopback host")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class Periodic:
    """A daemon thread that runs `action` now and then every `interval` seconds until
    stopped; an exception is logged as one line and never ends the thread."""

    def __init__(self, *, name: str, interval: float, action: Callable[[], object]) -> None:
        self.name, self.interval, self.action = name, interval, action
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = DEFAULT_JOB_STOP_TIMEOUT_SECONDS) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.action()
            except Exception as exc:  # a failed run must not end the job
                log.error("%s failed: %s", self.name, _one_line(exc))
            self._stop.wait(self.interval)


def refresh_team_mau(store: Store, catalog: Catalog, metrics: TeamMetrics, *, limit: int,
                     clock: Clock) -> None:
    """Publish the current-period MAU of the `limit` largest catalog teams."""
    now = clock()
    mau = {}
    for account in catalog.accounts:
        mau[account.team] = store.mau(account.team, account.calendar.period_containing(now).start)
    metrics.publish(mau, limit=limit)


def periodic_close(settings: Settings, store: Store, catalog: Catalog, metrics: CloseMetrics,
                   clock: Clock) -> None:
    """One turn of serve's close: skipped, not failed, while another close holds the lease
    (the next turn comes soon)."""
    try:
        run_close(settings, catalog=catalog, as_of=clock(), team=None, metrics=metrics,
                  store=store, wait=0)
    except LeaseBusy as exc:
        log.info("periodic close skipped: %s", exc)


def periodic_alerts(settings: Settings, check: AlertCheck, clock: Clock) -> None:
    """One turn of serve's usage alerts check (the alerts topic made first, as the close
    makes its topics on every run)."""
    ensure_topics(settings.bootstrap_servers, [settings.alerts_topic],
                  partitions=settings.partitions)
    run = check(clock())
    if run.skipped:
        log.info("usage alerts skipped: another process holds the alerts lease")


def _alert_job(settings: Settings, store: Store, catalog: Catalog, metrics: AlertMetrics,
               clock: Clock) -> Periodic | None:
    """The usage alerts check beside the periodic close, for a catalog with alerts."""
    check = (alert_check(settings, store, catalog, metrics)
             if settings.close_interval_seconds > 0 else None)
    if check is None:
        return None
    return Periodic(name="usage alerts", interval=settings.close_interval_seconds,
                    action=lambda: periodic_alerts(settings, check, clock))


def _jobs(settings: Settings, store: Store, api_store: Store, catalog: Catalog,
          registry: CollectorRegistry, clock: Clock) -> list[Periodic]:
    """The background jobs: the close on `store`, the MAU refresh (reads like the API's) on
    `api_store`."""
    close_metrics = CloseMetrics.create(registry)  # even unused, so the series exist
    jobs: list[Periodic] = []
    if settings.close_interval_seconds > 0:
        jobs.append(Periodic(
            name="periodic close", interval=settings.close_interval_seconds,
            action=lambda: periodic_close(settings, store, catalog, close_metrics, clock),
        ))
    alerts = _alert_job(settings, store, catalog, AlertMetrics.create(registry), clock)
    if alerts is not None:
        jobs.append(alerts)
    if settings.top_teams_metric > 0:
        team_metrics = TeamMetrics.create(registry)
        jobs.append(Periodic(
            name="team MAU refresh", interval=DEFAULT_TEAM_METRICS_INTERVAL_SECONDS,
            action=lambda: refresh_team_mau(api_store, catalog, team_metrics,
                                            limit=settings.top_teams_metric, clock=clock),
        ))
    return jobs


def _terminated(_signum: int, _frame: FrameType | None) -> None:
    """SIGTERM outside uvicorn's own handling: after its graceful shutdown, or before it
    started listening."""
    raise SystemExit(0)


def run_serve(settings: Settings) -> int:
    # Imported here: the web stack costs every other command its start-up time.
    import uvicorn

    from metering.api.app import create_api
    from metering.api.event_sink import KafkaEventSink

    problem = exposure_problem(settings)
    if problem:
        print(f"metering: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    catalog = load_settings_catalog(settings, required=True)
    store = open_ready_store(settings)

    def clock() -> datetime:
        return datetime.now(UTC)

    try:
        registry = CollectorRegistry()
        api_store = with_timeout(store, settings.api_store_timeout_seconds)
        jobs = _jobs(settings, store, api_store, catalog, registry, clock)
        sink = KafkaEventSink(settings.bootstrap_servers, settings.events_topic,
                              timeout=settings.ingest_timeout_seconds,
                              topics=(settings.events_topic, settings.rejected_topic),
                              partitions=settings.partitions)
        app = create_api(settings=settings, store=api_store, catalog=catalog,
                         registry=registry, clock=clock, producer=sink)
        if not settings.api_tokens:
            log.warning("no API tokens: the API is open to anyone on %s", settings.api_host)
        # uvicorn shuts down gracefully on SIGTERM and then raises it again for the handler
        # it found: this one exits through the `finally`s, so the jobs stop, the store closes
        # and the exit code is 0.
        previous = signal.signal(signal.SIGTERM, _terminated)
        try:
            for job in jobs:
                job.start()
            # log_config=None: uvicorn's loggers go through the root configuration
            uvicorn.run(app, host=settings.api_host, port=settings.api_port, log_config=None)
        finally:
            signal.signal(signal.SIGTERM, previous)
            for job in jobs:
                job.stop()
            sink.close()
    finally:
        store.close()
    return 0


def serve(args: argparse.Namespace, settings: Settings) -> int:
    """The `serve` command: --host and --port override METERING_API_HOST and _PORT."""
    overrides = {key: value for key, value in (("api_host", args.host), ("api_port", args.port))
                 if value is not None}
    return run_serve(settings.model_copy(update=overrides))
