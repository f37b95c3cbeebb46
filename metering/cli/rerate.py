"""`metering rerate`: the invoices of a range of billing dates as issued and as a candidate
catalog would have issued them, storing and publishing nothing (metering/rerate.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from invoicing import MAX_RERATE_DAYS, RerateError, range_problem, rerate_json
from metering.cli.commands import CliUsageError, parse_day
from metering.rerate import rerate_text, run_rerate
from metering.settings import Settings
from schemas import FIRST_DATE, LAST_DATE, load_catalog

__all__ = ["add_parser", "rerate"]

DESCRIPTION = (
    "Pricing what-if: rate the invoices of the billing dates FROM..TO again under a candidate "
    "catalog, from the stored usage and billing changes, and print per team the total issued, "
    "the candidate's total and the difference, then the totals per currency. Invoices before "
    "FROM stand as issued; each re-rated invoice sees what the candidate billed before it. "
    "Nothing is stored or published. Teams whose history the candidate cannot apply are "
    "listed with the reason and left out of the figures."
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]
               ) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "rerate", help="pricing what-if: a date range's invoices re-rated under a candidate "
                       "catalog, storing and publishing nothing",
        description=DESCRIPTION)
    parser.add_argument(
        "--candidate", type=Path, required=True, metavar="CANDIDATE.yaml",
        help="the candidate catalog: plans and accounts in the catalog file's format and "
             "limits; its accounts are the teams compared (--catalog, the live catalog, is "
             "not read)")
    parser.add_argument("--from", dest="first_day", type=parse_day, required=True, metavar="DATE",
                        help=f"the first billing date re-rated ({FIRST_DATE}..{LAST_DATE})")
    parser.add_argument("--to", dest="last_day", type=parse_day, required=True, metavar="DATE",
                        help=f"the last billing date re-rated; --from..--to spans at most "
                             f"{MAX_RERATE_DAYS} days")
    parser.add_argument("--team", help="only this team of the candidate catalog")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object, as POST /v1/rerate answers")
    parser.set_defaults(run=rerate)
    return parser


def rerate(args: argparse.Namespace, settings: Settings) -> int:
    """Print the what-if as a table, or (`--json`) as one JSON object."""
    problem = range_problem(args.first_day, args.last_day)
    if problem:  # before a large candidate is read
        raise CliUsageError(problem)
    candidate = load_catalog(args.candidate)  # CatalogError: one line, exit 1
    try:
        result = run_rerate(settings, candidate=candidate, first_day=args.first_day,
                            last_day=args.last_day, team=args.team)
    except RerateError as exc:  # a range out of bounds, an unknown team
        raise CliUsageError(str(exc)) from exc
    print(json.dumps(rerate_json(result)) if args.json else rerate_text(result))
    return 0
