"""What each `metering` sub-command does; cli.py parses, these run."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from zoneinfo import ZoneInfo

from kafka import KafkaProducer
from prometheus_client import CollectorRegistry, start_http_server
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Column

from aggregation import open_store
from aggregation.periods import period_containing
from aggregation.store import Store
from invoicing import close as closing
from metering.emit import EmitReport, emit_change_lines, emit_lines
from metering.first_seen import DEFAULT_CLOCK, BillingClock
from metering.kafka_io import BrokerError, ensure_topics, make_producer
from metering.logs import logging_config
from metering.metrics import CloseMetrics
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
    return [
        settings.events_topic, settings.rejected_topic, settings.charges_topic,
        settings.changes_topic, settings.changes_rejected_topic,
    ]


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
        # Faust replaces the root logging configuration when it starts: hand it ours.
        faust.Worker(
            app, loglevel=settings.log_level, logging_config=logging_config(settings), quiet=True
        ).execute_from_commandline()
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


def show_progress(args: argparse.Namespace) -> bool:
    """A progress bar on stderr when asked (--progress) or when a person watches it."""
    return bool(args.progress) or sys.stderr.isatty()


# A long path or team name must not push the bar off an 80-column pipe.
DEFAULT_DESCRIPTION_WIDTH = 32


def _progress(*columns: ProgressColumn) -> Progress:
    description = TextColumn("{task.description}", table_column=Column(
        max_width=DEFAULT_DESCRIPTION_WIDTH, no_wrap=True, overflow="ellipsis"))
    return Progress(description, *columns, console=Console(stderr=True, force_terminal=True))


def _open_source(source: str) -> tuple[BinaryIO, int | None]:
    """The input of emit and backfill, and its size in bytes when it is a regular file."""
    if source == "-":
        handle: BinaryIO = sys.stdin.buffer
    else:
        try:
            handle = Path(source).open("rb")
        except OSError as exc:
            raise CliError(f"{source}: cannot read ({exc.strerror})") from exc
    try:
        info = os.fstat(handle.fileno())
    except (OSError, ValueError):
        return handle, None  # stdin may be a stream without a descriptor
    return handle, info.st_size if stat.S_ISREG(info.st_mode) else None


def _read(source: str, handle: BinaryIO) -> Iterator[bytes]:
    try:
        yield from handle
    except OSError as exc:
        raise CliError(f"{source}: cannot read ({exc.strerror})") from exc


# Advancing a rich bar costs a lock and a clock read: done per this many bytes, not per line.
DEFAULT_PROGRESS_STEP_BYTES = 64 * 1024


def _counting(lines: Iterable[bytes], progress: Progress, task: TaskID) -> Iterator[bytes]:
    step = 0
    for line in lines:
        yield line
        step += len(line)
        if step >= DEFAULT_PROGRESS_STEP_BYTES:
            progress.advance(task, step)
            step = 0
    progress.advance(task, step)


def _send_lines(source: str, settings: Settings, *, progress: bool, changes: bool = False
                ) -> int:
    """emit and backfill: validate and send the lines (activity events, or billing changes
    with `changes`), report rejected lines, exit 1 if any."""
    topic, noun = (settings.changes_topic, "changes") if changes else (
        settings.events_topic, "events")

    def send(lines: Iterable[bytes], producer: KafkaProducer) -> EmitReport:
        if changes:
            return emit_change_lines(lines, producer=producer, topic=topic)
        return emit_lines(lines, producer=producer, topic=topic)

    handle, size = _open_source(source)
    try:
        ensure_topics(settings.bootstrap_servers, _all_topics(settings),
                      partitions=settings.partitions)
        producer = make_producer(settings.bootstrap_servers)
        try:
            lines = _read(source, handle)
            if progress:
                with _progress(
                    BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(),
                ) as bar:
                    task = bar.add_task(f"sending {source}", total=size)
                    report = send(_counting(lines, bar, task), producer)
            else:
                report = send(lines, producer)
        finally:
            producer.close()
    finally:
        handle.close()
    for rejected in report.rejected:
        print(f"line {rejected.line}: {rejected.reason}: {rejected.detail}", file=sys.stderr)
    print(f"sent {report.sent} {noun}; rejected {len(report.rejected)} lines")
    return 1 if report.rejected else 0


def emit(args: argparse.Namespace, settings: Settings) -> int:
    return _send_lines(args.file, settings, progress=False, changes=args.changes)


def backfill(args: argparse.Namespace, settings: Settings) -> int:
    """Re-send archived events with their original (source, id): the store counts each
    (source, id) once, so events already seen change nothing, and events for a period
    already closed reach the next invoice as an adjustment line."""
    return _send_lines(args.file, settings, progress=show_progress(args))


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


def run_close(
    settings: Settings,
    *,
    as_of: datetime,
    team: str | None,
    metrics: CloseMetrics | None = None,
    progress: bool = False,
    store: Store | None = None,
) -> closing.CloseResult:
    """Issue and publish what is due; the progress bar counts teams. The run is recorded in
    `metrics`, a failed one with the invoices it published before failing. Without `store`
    the settings' store is opened for the run and closed after it."""
    started = time.monotonic()
    published: list[Invoice] = []
    ok = False
    try:
        with contextlib.ExitStack() as stack:
            if store is None:
                store = open_ready_store(settings)
                stack.callback(store.close)
            result = _close(settings, store, as_of=as_of, team=team, published=published,
                            progress=progress)
        ok = True
    finally:
        if metrics is not None:
            metrics.record(ok=ok, seconds=time.monotonic() - started, issued=len(published),
                           finished_at=time.time())
    return result


def _no_progress(team: str) -> None:
    """No bar: nothing to advance."""


def _team_bar(stack: contextlib.ExitStack, teams: int) -> Callable[[str], None]:
    """A bar over `teams`, closed with `stack`; the returned callable advances it."""
    bar = stack.enter_context(_progress(BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()))
    task = bar.add_task("closing", total=teams)

    def advance(team: str) -> None:
        bar.update(task, advance=1, description=f"closed {team}")

    return advance


def _close(
    settings: Settings, store: Store, *, as_of: datetime, team: str | None,
    published: list[Invoice], progress: bool,
) -> closing.CloseResult:
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
        published.append(invoice)

    try:
        with contextlib.ExitStack() as stack:
            on_team: Callable[[str], None] = _no_progress
            if progress:
                teams = 1 if team is not None else len(catalog.accounts)
                on_team = _team_bar(stack, teams)
            return closing.close(
                store=store, catalog=catalog, as_of=as_of, grace=settings.grace,
                publish=publish, team=team, on_team=on_team,
            )
    finally:
        producer.close()


def close(args: argparse.Namespace, settings: Settings) -> int:
    result = run_close(settings, as_of=args.as_of, team=args.team,
                       progress=show_progress(args))
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
