"""What each `metering` sub-command does; `main` parses, these run."""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import os
import stat
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import BinaryIO, Literal, Protocol, TextIO

from kafka import KafkaProducer
from prometheus_client import CollectorRegistry, start_http_server
from rich.progress import (
    BarColumn,
    DownloadColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from aggregation import StoredInvoice
from invoicing import (
    CloseSummary,
    OnDue,
    PruneRefused,
    check_change,
    check_payment,
    prune_cutoff,
    read_access,
)
from metering.cli.progress import counting, progress_bar, show_progress, team_bar
from metering.cli.report import (
    INVOICE_HEADER,
    NO_INVOICES,
    access_json,
    access_table,
    invoice_rows,
    usage_table,
)
from metering.closing import ahead_problem, rehearse_close, run_close
from metering.kafka_io import ensure_topics, make_producer
from metering.logs import logging_config
from metering.producer import EmitReport, emit_change_lines, emit_lines, emit_payments
from metering.prune import run_prune
from metering.runtime import load_settings_catalog, open_ready_store
from metering.settings import Settings
from schemas import DEFAULT_CALENDAR, Invoice, date_problem

__all__ = [
    "CliError",
    "CliUsageError",
    "backfill",
    "close",
    "demo",
    "emit",
    "prune",
    "status",
    "usage",
    "worker",
]


def range_error(day: date, what: str) -> None:
    """ArgumentTypeError when `day` is outside FIRST_DATE..LAST_DATE (schemas.limits)."""
    problem = date_problem(day, what)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)


def parse_day(text: str) -> date:
    """An ISO date within FIRST_DATE..LAST_DATE (an argparse type)."""
    try:
        day = date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date (2026-08-04)") from exc
    range_error(day, "date")
    return day


class CliError(Exception):
    """A user-facing failure of a command: printed as one line, exit code 1."""


class CliUsageError(CliError):
    """A command line that must not run as given: printed as one line, exit code 2."""


def _all_topics(settings: Settings) -> list[str]:
    return [
        settings.events_topic, settings.rejected_topic, settings.charges_topic,
        settings.changes_topic, settings.changes_rejected_topic, settings.payments_topic,
        settings.payments_rejected_topic, settings.notices_topic, settings.alerts_topic,
    ]


def worker(args: argparse.Namespace, settings: Settings) -> int:
    import faust

    from metering.stream import create_app

    catalog = load_settings_catalog(settings, required=False)
    store = open_ready_store(settings)
    ensure_topics(settings.bootstrap_servers, _all_topics(settings), partitions=settings.partitions)
    try:
        (settings.work_dir / f"{settings.app_id}-data").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"work dir {settings.work_dir}: {exc.strerror}") from exc
    registry = CollectorRegistry()
    check = functools.partial(check_change, catalog=catalog)
    app = create_app(settings, store=store, catalog=catalog, check_change=check,
                     check_payment=functools.partial(check_payment, catalog=catalog),
                     registry=registry)
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


def _open_source(source: str, *, unreadable: type[CliError] = CliError
                 ) -> tuple[BinaryIO, int | None]:
    """The input of emit and backfill, and its size in bytes when it is a regular file; a
    file that cannot be opened raises `unreadable`."""
    if source == "-":
        handle: BinaryIO = sys.stdin.buffer
    else:
        try:
            handle = Path(source).open("rb")
        except OSError as exc:
            raise unreadable(f"{source}: cannot read ({exc.strerror})") from exc
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


EmitKind = Literal["events", "changes", "payments"]


class Sender(Protocol):
    """A validating line sender of metering.producer."""

    def __call__(self, lines: Iterable[bytes], *, producer: KafkaProducer, topic: str
                 ) -> EmitReport: ...


def _sender(settings: Settings, kind: EmitKind) -> tuple[str, Sender]:
    """The topic and the validating sender of each kind of line."""
    if kind == "changes":
        return settings.changes_topic, emit_change_lines
    if kind == "payments":
        return settings.payments_topic, emit_payments
    return settings.events_topic, emit_lines


def _send_lines(source: str, settings: Settings, *, progress: bool, kind: EmitKind = "events"
                ) -> int:
    """emit and backfill: validate and send the lines (activity events, billing changes or
    payment outcomes), report rejected lines, exit 1 if any. A payments file that cannot be
    opened is a usage error (exit 2), as the lifecycle commands' user errors are."""
    topic, sender = _sender(settings, kind)

    def send(lines: Iterable[bytes], producer: KafkaProducer) -> EmitReport:
        return sender(lines, producer=producer, topic=topic)

    handle, size = _open_source(
        source, unreadable=CliUsageError if kind == "payments" else CliError)
    try:
        ensure_topics(settings.bootstrap_servers, _all_topics(settings),
                      partitions=settings.partitions)
        producer = make_producer(settings.bootstrap_servers)
        try:
            lines = _read(source, handle)
            if progress:
                with progress_bar(
                    BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(),
                ) as bar:
                    task = bar.add_task(f"sending {source}", total=size)
                    report = send(counting(lines, bar, task), producer)
            else:
                report = send(lines, producer)
        finally:
            producer.close()
    finally:
        handle.close()
    for rejected in report.rejected:
        print(f"line {rejected.line}: {rejected.reason}: {rejected.detail}", file=sys.stderr)
    print(f"sent {report.sent} {kind}; rejected {len(report.rejected)} lines")
    return 1 if report.rejected else 0


def emit(args: argparse.Namespace, settings: Settings) -> int:
    kind: EmitKind = "changes" if args.changes else "payments" if args.payments else "events"
    return _send_lines(args.file, settings, progress=False, kind=kind)


def backfill(args: argparse.Namespace, settings: Settings) -> int:
    """Re-send archived events with their original (source, id): the store counts each
    (source, id) once, so events already seen change nothing, and events for a period
    already closed reach the next invoice as an adjustment line."""
    return _send_lines(args.file, settings, progress=show_progress(args))


def usage(args: argparse.Namespace, settings: Settings) -> int:
    catalog = load_settings_catalog(settings, required=False)
    account = catalog.account(args.team)
    calendar = account.calendar if account else DEFAULT_CALENDAR
    period = calendar.period_containing(args.at or datetime.now(UTC))
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


def status(args: argparse.Namespace, settings: Settings) -> int:
    """The team's lifecycle state now and whether login is allowed: the answer of
    GET /v1/teams/{team}/access, as a short table or (`--json`) the same JSON object."""
    catalog = load_settings_catalog(settings, required=True)
    if catalog.account(args.team) is None:
        raise CliUsageError(f"unknown team {args.team!r}: not in the catalog")
    store = open_ready_store(settings)
    try:
        access = read_access(store, catalog, args.team, datetime.now(UTC))
    finally:
        store.close()
    print(json.dumps(access_json(access)) if args.json else access_table(access))
    return 0


class DueOutput:
    """Writes due invoices to `out` as the close reports them, holding none: the JSON array
    (`--json`) element by element, or the table row by row. Nothing is written before the
    first invoice, so a close that fails before any leaves stdout empty."""

    def __init__(self, out: TextIO, *, as_json: bool) -> None:
        self.out, self.as_json, self.count = out, as_json, 0

    def __call__(self, invoice: StoredInvoice, new: bool) -> None:
        if self.as_json:
            self.out.write(("[" if not self.count else ", ") + invoice.body)
        else:
            rows = invoice_rows(Invoice.model_validate_json(invoice.body))
            head = [INVOICE_HEADER] if not self.count else []
            self.out.write("\n".join(head + rows) + "\n")
        self.count += 1

    def finish(self) -> None:
        if self.as_json:
            self.out.write("]\n" if self.count else "[]\n")
        elif not self.count:
            self.out.write(f"{INVOICE_HEADER}\n{NO_INVOICES}\n")
        self.out.flush()


def _waiting(holder: str) -> None:
    print(f"waiting for the close lease, held by {holder}", file=sys.stderr, flush=True)


def close_with_progress(settings: Settings, *, as_of: datetime, team: str | None,
                        progress: bool, on_due: OnDue | None = None,
                        rehearsal: bool = False) -> CloseSummary:
    """The close of the settings' catalog, or with `rehearsal` what it would issue (nothing
    stored or published); with `progress`, a bar counts the teams."""
    catalog = load_settings_catalog(settings, required=True)
    tune_collector()  # a million accounts must not be walked by every collection
    with contextlib.ExitStack() as stack:
        on_teams = (team_bar(stack, 1 if team is not None else len(catalog.accounts))
                    if progress else None)
        if rehearsal:
            return rehearse_close(settings, catalog=catalog, as_of=as_of, team=team,
                                  on_teams=on_teams, on_due=on_due)
        return run_close(settings, catalog=catalog, as_of=as_of, team=team, on_teams=on_teams,
                         on_due=on_due, on_wait=_waiting)


def close(args: argparse.Namespace, settings: Settings) -> int:
    started = time.monotonic()
    if not args.rehearsal:
        problem = ahead_problem(args.as_of, datetime.now(UTC))
        if problem is not None:
            raise CliUsageError(f"--as-of {problem}; pass --rehearsal to see what a close "
                                "would issue, with nothing stored or published")
    output = None if args.quiet else DueOutput(sys.stdout, as_json=args.json)
    summary = close_with_progress(settings, as_of=args.as_of, team=args.team,
                                  progress=show_progress(args), on_due=output,
                                  rehearsal=args.rehearsal)
    if output is not None:
        output.finish()
    issued = (f"rehearsal, nothing stored or published: would issue {summary.issued}"
              if args.rehearsal else f"issued {summary.issued}")
    print(f"{issued} new invoices; {summary.due} due as of {args.as_of.isoformat()}; "
          f"{summary.teams} teams in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


def prune(args: argparse.Namespace, settings: Settings) -> int:
    """Drop the raw events of whole months before `--before`'s month, all of whose periods
    are invoiced (all or nothing): one line per month, or (`--json`) one object."""
    catalog = load_settings_catalog(settings, required=True)
    try:
        report = run_prune(settings, catalog=catalog, before=args.before, dry_run=args.dry_run,
                           on_wait=_waiting)
    except PruneRefused as exc:
        raise CliError(str(exc)) from exc
    if args.json:
        print(json.dumps({
            "before": report.before.isoformat(),
            "months": [{"month": month.label, "teams": month.teams, "periods": month.periods}
                       for month in report.months],
            "dry_run": report.dry_run,
        }))
    elif not report.months:
        print(f"nothing to drop: no events of periods before "
              f"{prune_cutoff(report.before).isoformat()}")
    else:
        verb = "would drop" if report.dry_run else "dropped"
        for month in report.months:
            print(f"{verb} events of {month.label}: {month.teams:,} teams, "
                  f"{month.periods:,} periods")
    return 0


def demo(args: argparse.Namespace, settings: Settings) -> int:
    """The demo; --port (default METERING_API_PORT) is where --serve listens and what the
    printed next commands name."""
    from metering.cli.demo import run_demo  # the demo's broker and generator load only here

    if args.teams < 1:
        raise CliUsageError(f"--teams must be at least 1, not {args.teams}")
    port = settings.api_port if args.port is None else args.port
    if port == 0:
        raise CliUsageError("the demo needs a fixed port: pass --port 1-65535")
    return run_demo(teams=args.teams, users=args.users, workdir=args.workdir, serve=args.serve,
                    port=port)
