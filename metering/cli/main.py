"""`metering` console script (README "Command line"): one clear line per error."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import NoReturn

from kafka.errors import KafkaError
from pydantic import ValidationError

import metering.cli.commands as commands
import metering.cli.reconcile as reconcile_cli
import metering.cli.rerate as rerate_cli
from aggregation import StoreError
from invoicing import CloseError
from metering import logs
from metering.api import port_number, serve
from metering.cli.commands import CliError, CliUsageError, parse_day, range_error
from metering.kafka_io import BrokerError
from metering.lease import LeaseError
from metering.runtime import SetupError
from metering.settings import Settings
from schemas import FIRST_DATE, LAST_DATE, CatalogError

DESCRIPTION = ("Exact, replayable usage metering: activity events to distinct monthly active "
               "users, invoices and charges.")
EXIT_USAGE = 2
EXIT_FAILURE = 1
# How the help names a moment's rules (README "Command line").
DATES = f"UTC unless an offset is given; {FIRST_DATE}..{LAST_DATE}"


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    print(f"metering: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def parse_moment(text: str) -> datetime:
    """A date means the end of that day in UTC; a date-time without offset means UTC. Its
    day in UTC must lie within FIRST_DATE..LAST_DATE (schemas.limits)."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        range_error(day, "date")
        return datetime.combine(day, time.max, tzinfo=UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO date (2026-08-04) or date-time"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        day = moment.astimezone(UTC).date()
    except OverflowError:  # year 1 or 9999 shifted past datetime's range: outside anyway
        day = moment.date()
    range_error(day, "date" if day == moment.date() else "UTC date")
    return moment


def build_settings(args: argparse.Namespace) -> Settings:
    overrides = {
        key: value
        for key, value in (
            ("broker_url", args.broker), ("store_url", args.store), ("catalog", args.catalog)
        )
        if value is not None
    }
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        fail(f"setting {field}: {str(err['msg']).removeprefix('Value error, ')}", EXIT_USAGE)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", help="kafka://host:port (METERING_BROKER_URL)")
    parser.add_argument("--store", help="clickhouse://host:port/db or chdb:///path "
                                        "(METERING_STORE_URL)")
    parser.add_argument("--catalog", type=Path, help="plans and accounts YAML (METERING_CATALOG)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metering", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the whole pipeline on a generated month")
    demo.add_argument("--teams", type=int, default=6)
    demo.add_argument("--users", type=int, default=4000, help="people across all teams")
    demo.add_argument("--workdir", type=Path,
                      help="keep the data here instead of in a fresh folder the demo names")
    demo.add_argument("--serve", action="store_true",
                      help="then serve the API on the demo's data (loopback) until Ctrl-C")
    demo.add_argument("--port", type=port_number,
                      help="the API's port with --serve and in the printed next commands "
                           "(METERING_API_PORT)")
    demo.set_defaults(run=commands.demo)

    worker = sub.add_parser("worker", help="run the Faust worker with all agents")
    worker.set_defaults(run=commands.worker)

    emit = sub.add_parser("emit", help="send CloudEvents JSON lines to the events topic "
                                       "(or billing changes, or payment outcomes)")
    emit.add_argument("file", help="a file of JSON lines, or - for standard input")
    kind = emit.add_mutually_exclusive_group()
    kind.add_argument("--changes", action="store_true",
                      help="the lines are billing changes: send them to METERING_CHANGES_TOPIC")
    kind.add_argument("--payments", action="store_true",
                      help="the lines are payment outcomes: send them to "
                           "METERING_PAYMENTS_TOPIC")
    emit.set_defaults(run=commands.emit)

    backfill = sub.add_parser(
        "backfill", help="re-send archived CloudEvents JSON lines with their original ids"
    )
    backfill.add_argument("file", help="a file of JSON lines, or - for standard input")
    backfill.add_argument("--progress", action="store_true",
                          help="show the progress bar even when stderr is not a terminal")
    backfill.set_defaults(run=commands.backfill)

    usage = sub.add_parser("usage", help="MAU and counted users of a team's period")
    usage.add_argument("--team", required=True)
    usage.add_argument("--at", type=parse_moment,
                       help=f"a date or date-time in the period (default now; {DATES})")
    usage.add_argument("--json", action="store_true")
    usage.set_defaults(run=commands.usage)

    close = sub.add_parser("close", help="issue the invoices due as of a date")
    close.add_argument("--as-of", dest="as_of", type=parse_moment, required=True,
                       help=f"a date (its end) or date-time, ahead of now only with --rehearsal "
                            f"({DATES})")
    close.add_argument("--team")
    output = close.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="the due invoices as one JSON array")
    output.add_argument("--quiet", action="store_true",
                        help="print no invoice, only the summary line on stderr (a billing job "
                             "reads the charges topic)")
    close.add_argument("--progress", action="store_true",
                       help="show the progress bar even when stderr is not a terminal")
    close.add_argument("--rehearsal", action="store_true",
                       help="rate and print what the close would issue, even ahead of now, "
                            "storing and publishing nothing")
    close.set_defaults(run=commands.close)

    status = sub.add_parser(
        "status", help="a team's lifecycle state and whether login is allowed"
    )
    status.add_argument("--team", required=True)
    status.add_argument("--json", action="store_true",
                        help="one JSON object, as GET /v1/teams/{team}/access answers")
    status.set_defaults(run=commands.status)

    prune = sub.add_parser(
        "prune", help="drop the raw events of whole months before a date, once invoiced"
    )
    prune.add_argument("--before", type=parse_day, required=True,
                       help="drop the months wholly before this date's month, all of whose "
                            f"periods are invoiced ({FIRST_DATE}..{LAST_DATE})")
    prune.add_argument("--dry-run", dest="dry_run", action="store_true",
                       help="print what would be dropped, dropping nothing")
    prune.add_argument("--json", action="store_true",
                       help='one JSON object {"before", "months", "dry_run"}')
    prune.set_defaults(run=commands.prune)

    serve_api = sub.add_parser("serve", help="HTTP read API for dashboards plus /metrics")
    serve_api.add_argument("--host", help="listen address (METERING_API_HOST)")
    serve_api.add_argument("--port", type=port_number,
                           help="listen port, 0 for any free one (METERING_API_PORT)")
    serve_api.set_defaults(run=serve)

    rerate = rerate_cli.add_parser(sub)
    reconcile = reconcile_cli.add_parser(sub)

    for command in (demo, worker, emit, backfill, usage, close, status, prune, serve_api, rerate,
                    reconcile):
        _add_common(command)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace, Settings], int] = args.run
    settings = build_settings(args)
    try:
        logs.configure(settings)
    except ValueError as exc:
        fail(f"setting log_level: {exc}", EXIT_USAGE)
    try:
        code = run(args, settings)
    except CliUsageError as exc:
        fail(str(exc), EXIT_USAGE)
    except (CliError, SetupError, CatalogError, CloseError, BrokerError, StoreError,
            LeaseError) as exc:
        fail(str(exc))
    except KafkaError as exc:
        fail(f"broker: {exc}")
    except BrokenPipeError:
        _silence_stdout()
        fail("the output was closed before the command finished (broken pipe)")
    except KeyboardInterrupt:
        fail("interrupted", 130)
    raise SystemExit(code)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush of a closed pipe
    prints nothing more (Python's documented way out of a broken pipe)."""
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a file: nothing is flushed to a pipe
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, descriptor)
    os.close(devnull)

