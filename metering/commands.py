"""What each `metering` sub-command does; cli.py parses, these run."""

from __future__ import annotations

import argparse
import gc
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry, start_http_server

from aggregation import open_store
from aggregation.periods import period_containing
from aggregation.store import Store
from invoicing import close as closing
from metering.emit import emit_lines
from metering.first_seen import DEFAULT_CLOCK, BillingClock
from metering.kafka_io import BrokerError, ensure_topics, make_producer
from metering.report import invoice_table, usage_table
from metering.settings import Settings
from schemas.catalog import Catalog, load_catalog
from schemas.invoice import Invoice


class CliError(Exception):
    """A user-facing failure: printed as one line, exit code 1."""


def load_settings_catalog(settings: Settings, *, required: bool) -> Catalog:
    if settings.catalog is None:
        if required:
            raise CliError("no catalog: set METERING_CATALOG or pass --catalog FILE")
        return Catalog()
    return load_catalog(settings.catalog)


def open_ready_store(settings: Settings) -> Store:
    try:
        store = open_store(settings.store_url)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    store.ensure_schema()
    return store


def _all_topics(settings: Settings) -> list[str]:
    return [settings.events_topic, settings.rejected_topic, settings.charges_topic]


def worker(args: argparse.Namespace, settings: Settings) -> int:
    import faust

    from metering.worker import create_app

    catalog = load_settings_catalog(settings, required=False)
    store = open_ready_store(settings)
    ensure_topics(settings.bootstrap_servers, _all_topics(settings), partitions=settings.partitions)
    try:
        (settings.work_dir / f"{settings.app_id}-data").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"work dir {settings.work_dir}: {exc.strerror}") from exc
    registry = CollectorRegistry()
    app = create_app(settings, store=store, catalog=catalog, registry=registry)
    if settings.metrics_port is not None:
        start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=registry)
    tune_collector()
    try:
        faust.Worker(app, loglevel=settings.log_level, quiet=True).execute_from_commandline()
    finally:
        store.close()
    return 0


# Each batch allocates hundreds of thousands of short-lived objects while the dedupe state
# stays large: with the default threshold (700) the collector ran during most allocations
# and took more time than validation itself (py-spy; bench/throughput.py in README).
DEFAULT_GC_YOUNG_THRESHOLD = 100_000


def tune_collector() -> None:
    """Start-up objects leave the collector's generations; young collections run rarely."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(DEFAULT_GC_YOUNG_THRESHOLD, middle, old)


def _lines(source: str) -> Iterator[bytes]:
    if source == "-":
        yield from sys.stdin.buffer
        return
    try:
        with Path(source).open("rb") as handle:
            yield from handle
    except OSError as exc:
        raise CliError(f"{source}: cannot read ({exc.strerror})") from exc


def emit(args: argparse.Namespace, settings: Settings) -> int:
    ensure_topics(settings.bootstrap_servers, _all_topics(settings), partitions=settings.partitions)
    producer = make_producer(settings.bootstrap_servers)
    try:
        report = emit_lines(_lines(args.file), producer=producer, topic=settings.events_topic)
    finally:
        producer.close()
    for rejected in report.rejected:
        print(f"line {rejected.line}: {rejected.reason}: {rejected.detail}", file=sys.stderr)
    print(f"sent {report.sent} events; rejected {len(report.rejected)} lines")
    return 1 if report.rejected else 0


def usage(args: argparse.Namespace, settings: Settings) -> int:
    catalog = load_settings_catalog(settings, required=False)
    account = catalog.account(args.team)
    clock = (
        BillingClock(account.anchor_day, ZoneInfo(account.timezone)) if account else DEFAULT_CLOCK
    )
    moment = args.at or datetime.now(UTC)
    period = period_containing(moment, anchor_day=clock.anchor_day, zone=clock.zone)
    store = open_ready_store(settings)
    try:
        users = store.active_users(args.team, period.start)
        daily = store.daily_usage(args.team, period.start)
    finally:
        store.close()
    if args.json:
        print(json.dumps({
            "team": args.team,
            "period_start": period.start.isoformat(),
            "period_end": period.end.isoformat(),
            "mau": len(users),
            "users": [
                {"user_id": u.user_id, "first_time": u.first_time.isoformat(),
                 "event_id": u.event_id, "source": u.source, "type": u.event_type}
                for u in users
            ],
            "daily": [
                {"day": d.day.isoformat(), "type": d.event_type, "events": d.events,
                 "users": d.users}
                for d in daily
            ],
        }))
    else:
        print(usage_table(args.team, period, users))
    return 0


def run_close(settings: Settings, *, as_of: datetime, team: str | None) -> closing.CloseResult:
    catalog = load_settings_catalog(settings, required=True)
    ensure_topics(settings.bootstrap_servers, [settings.charges_topic],
                  partitions=settings.partitions)
    producer = make_producer(settings.bootstrap_servers, linger_ms=0)

    def publish(invoice: Invoice) -> None:
        future = producer.send(
            settings.charges_topic, key=invoice.team.encode(),
            value=invoice.canonical_json().encode(),
        )
        producer.flush()
        if future.failed():
            raise BrokerError(f"charge for {invoice.team} not published: {future.exception}")

    try:
        store = open_ready_store(settings)
        try:
            return closing.close(
                store=store, catalog=catalog, as_of=as_of, grace=settings.grace,
                publish=publish, team=team,
            )
        finally:
            store.close()
    finally:
        producer.close()


def close(args: argparse.Namespace, settings: Settings) -> int:
    result = run_close(settings, as_of=args.as_of, team=args.team)
    if args.json:
        print("[" + ", ".join(inv.body for inv in result.due) + "]")
    else:
        print(invoice_table([Invoice.model_validate_json(inv.body) for inv in result.due]))
    print(f"issued {len(result.issued)} new invoices; {len(result.due)} due as of "
          f"{args.as_of.isoformat()}", file=sys.stderr)
    return 0


def demo(args: argparse.Namespace, settings: Settings) -> int:
    from metering.demo import run_demo

    return run_demo(teams=args.teams, users=args.users, workdir=args.workdir)
