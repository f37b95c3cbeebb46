"""`metering reconcile`: the conservation ledger of each team and period, its identities
checked (metering/reconcile.py); exit 1 when one is violated, each violation one line on
stderr."""

from __future__ import annotations

import argparse
import sys
from datetime import date

from metering.cli.commands import CliError, CliUsageError
from metering.reconcile import (
    period_problem,
    reconcile_period,
    reconcile_range,
    reconcile_store,
    write_report,
)
from metering.runtime import load_settings_catalog, open_ready_store
from metering.settings import Settings

__all__ = ["add_parser", "reconcile"]

DESCRIPTION = (
    "The conservation ledger: per team and period, messages and events received, accepted, "
    "duplicates dropped (by the worker's window or by the store's key), rejected by reason, "
    "late (with the invoices whose adjustments booked them), distinct events stored, counted "
    "users, users billed and adjusted. Checks received = accepted + rejected; accepted = "
    "distinct stored + duplicates; counted users = users among the stored events (while the "
    "raw events are kept); billed + adjusted + pending users = current MAU for every invoiced "
    "period. Each violation is one line on stderr naming team, period and the two numbers, "
    "and the exit code is 1."
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]
               ) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "reconcile", help="check the conservation ledger: every event received is accounted "
                          "for, every counted user billed",
        description=DESCRIPTION)
    parser.add_argument("--team", help="only this team of the catalog (default: every team "
                                       "and period the store holds)")
    parser.add_argument("--period", metavar="START",
                        help="only the team's period starting on this date (needs --team)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON array of periods (one object with --period), as GET "
                             "/v1/teams/{team}/periods/{start}/ledger answers each")
    parser.set_defaults(run=reconcile)
    return parser


def _period_start(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CliUsageError(f"--period: {text!r} is not an ISO date (2026-08-04)") from None


def reconcile(args: argparse.Namespace, settings: Settings) -> int:
    """Print the ledger; 1 when an identity is violated, else 0."""
    team: str | None = args.team
    start = None if args.period is None else _period_start(args.period)
    if start is not None and team is None:
        raise CliUsageError("--period needs --team")
    catalog = load_settings_catalog(settings, required=team is not None)
    if team is not None:
        account = catalog.account(team)
        if account is None:
            raise CliError(f"unknown team {team!r}: not in the catalog")
        if start is not None:
            problem = period_problem(account, start)
            if problem:
                raise CliUsageError(f"--period: {problem}")
    store = open_ready_store(settings)
    try:
        if team is None:
            periods = reconcile_store(store, catalog, batch_teams=settings.close_batch_teams)
        elif start is None:
            periods = iter(reconcile_range(store, team, team))
        else:
            periods = iter([reconcile_period(store, team, start)])
        violations = write_report(periods, as_json=args.json, one=start is not None,
                                  out=sys.stdout, err=sys.stderr)
    finally:
        store.close()
    return 1 if violations else 0
