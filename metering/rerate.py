"""Run a pricing what-if (`metering rerate`, POST /v1/rerate) and shape its answer.

The candidate catalog is read as the live one is (schemas.parse_catalog: same format, same
limits) and names the teams; the store is only read: the close rates the range again
through a view that hides what was issued from FROM on (invoicing/rerate.py), with the
lifecycle of each team derived from the store as the close derives it (a paused team is not
invoiced under the candidate either). No lease, no insert, no broker.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, date, datetime

from aggregation import Store
from invoicing import (
    NotInvoiced,
    Rerate,
    RerateError,
    UnknownTeam,
    range_problem,
    rerate,
    rerate_as_of,
    rerate_json,
)
from metering.lifecycle import derive, lifecycle_accounts, not_invoiced
from metering.runtime import open_ready_store
from metering.settings import Settings
from schemas import Catalog

__all__ = ["rerate_text", "run_rerate"]


def run_rerate(
    settings: Settings,
    *,
    candidate: Catalog,
    first_day: date,
    last_day: date,
    team: str | None = None,
    now: datetime | None = None,
    store: Store | None = None,
) -> Rerate:
    """The invoices dated `first_day`..`last_day` as issued and under `candidate`, reading
    the store only. RerateError for a range out of bounds and UnknownTeam for a team the
    candidate lacks, both before the store is opened. Without `store` the settings' store is
    opened for the run (its schema put in place, as for every command: a no-op on a store in
    use) and closed after it."""
    problem = range_problem(first_day, last_day)
    if problem:
        raise RerateError(problem)
    if team is not None and candidate.account(team) is None:
        raise UnknownTeam(f"unknown team {team!r}: not in the candidate catalog")
    moment = datetime.now(UTC) if now is None else now
    with contextlib.ExitStack() as stack:
        if store is None:
            opened = open_ready_store(settings)
            stack.callback(opened.close)
            store = opened
        read = store
        as_of = rerate_as_of(last_day, settings.grace, moment)  # the close's, in `rerate`

        def windows(part: Catalog) -> NotInvoiced:
            """What the lifecycle keeps from being invoiced, as the close derives it."""
            return not_invoiced(derive(read, part, lifecycle_accounts(read, part), as_of))

        return rerate(store=read, catalog=candidate, first_day=first_day, last_day=last_day,
                      now=moment, grace=settings.grace, team=team,
                      batch_teams=settings.close_batch_teams, not_invoiced=windows)


_ROW = "{:<24} {:<8} {:>14} {:>14} {:>14} {:>9}"


def _signed(text: str) -> str:
    return text if text.startswith("-") or not text.strip("0.") else f"+{text}"


def rerate_text(result: Rerate) -> str:
    """The what-if as a table: a row per team and currency (INVOICES: issued/candidate),
    then the totals per currency, then the teams the candidate cannot rate and why."""
    data = rerate_json(result)
    out = [
        f"invoices dated {data['from']}..{data['to']} as issued and under the candidate, as "
        f"of {data['as_of']} (nothing stored or published)",
        _ROW.format("TEAM", "CURRENCY", "ISSUED", "CANDIDATE", "DIFFERENCE", "INVOICES"),
    ]
    for row in data["teams"]:
        out.append(_ROW.format(row["team"], row["currency"], row["issued"], row["candidate"],
                               _signed(row["difference"]),
                               f"{row['issued_invoices']}/{row['candidate_invoices']}"))
    if not data["teams"]:
        out.append("(no invoices dated in the range)")
    for total in data["totals"]:
        out.append(_ROW.format("TOTAL", total["currency"], total["issued"], total["candidate"],
                               _signed(total["difference"]), ""))
    for item in data["skipped"]:
        reason = item["reason"]  # a refused change's reason names its team first
        named = reason if reason.startswith(f"{item['team']}: ") else f"{item['team']}: {reason}"
        out.append(f"not rated: {named}")
    return "\n".join(line.rstrip() for line in out)
