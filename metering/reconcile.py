"""`metering reconcile`: the conservation ledger of every (team, period) the store can answer
for, its identities checked (invoicing/reconcile.py), as text or JSON.

Without a team the whole store is walked in ranges of teams, never in one read: the ranges
start at every `batch_teams`-th team of the catalog in byte order, the first at "" (the
events that named no valid team) and the last running past every team id, so teams the store
holds beyond the catalog (an account removed since) are read too. Each range costs four set
queries: the ledger's sums, the stored events' counts, the counted users and the invoices.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import date
from typing import Any, Final, NamedTuple, TextIO

from aggregation import Store
from invoicing import (
    Identity,
    PeriodLedger,
    reconcile_rows,
    team_label,
    violation_line,
)
from schemas import Account, Catalog, date_problem

__all__ = [
    "LAST_TEAM",
    "TeamRange",
    "period_json",
    "period_problem",
    "period_text",
    "reconcile_period",
    "reconcile_range",
    "reconcile_store",
    "team_ranges",
    "write_report",
]

# Sorts after every team id (ASCII, schemas.limits) in the store's byte order.
LAST_TEAM: Final = "\U0010ffff"


class TeamRange(NamedTuple):
    """Teams from `first` to `last` inclusive, less those from `below` on (None: none): the
    next range starts at `below`, and a team of the store between two catalog teams falls
    in exactly one range."""

    first: str
    last: str
    below: str | None


def team_ranges(teams: Sequence[str], size: int) -> list[TeamRange]:
    """Ranges covering every string, cut at every `size`-th of `teams` (sorted, distinct)."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    ordered = sorted(set(teams))
    cuts = [""] + [team for team in ordered[size::size] if team]
    return [TeamRange(start, cuts[i + 1], cuts[i + 1]) if i + 1 < len(cuts)
            else TeamRange(start, LAST_TEAM, None)
            for i, start in enumerate(cuts)]


def reconcile_range(store: Store, first: str, last: str, *,
                    periods: Sequence[tuple[str, date]] = ()) -> list[PeriodLedger]:
    """Every (team, period) of the teams from `first` to `last` with any row in the store,
    and those of `periods`."""
    return reconcile_rows(store.ledger(first, last), store.stored_events(first, last),
                          store.period_mau(first, last), store.invoices_between(first, last),
                          periods=periods)


def reconcile_store(store: Store, catalog: Catalog, *, batch_teams: int
                    ) -> Iterator[PeriodLedger]:
    """Every (team, period) of the store, range by range (`team_ranges`)."""
    for span in team_ranges([account.team for account in catalog.accounts], batch_teams):
        for period in reconcile_range(store, span.first, span.last):
            if span.below is None or period.team < span.below:
                yield period


def reconcile_period(store: Store, team: str, period_start: date) -> PeriodLedger:
    """One (team, period), zeros where the store holds nothing of it."""
    wanted = (team, period_start)
    (period,) = [period for period in reconcile_range(store, team, team, periods=[wanted])
                 if (period.team, period.period_start) == wanted]
    return period


def period_problem(account: Account, start: date) -> str | None:
    """Why `start` is not a period start of `account`, or None: the rule of every API and
    command that takes a period by its start (periods start within the dates every input is
    held to, schemas.FIRST_DATE..LAST_DATE)."""
    problem = date_problem(start, "period start")
    if problem:
        return problem
    holding = account.calendar.period_for_date(start).start
    if holding != start:
        return (f"{start} is not a period start of team {account.team!r}: "
                f"the period holding it starts on {holding}")
    return None


def period_json(period: PeriodLedger) -> dict[str, Any]:
    """One period as `--json` prints it and GET .../ledger answers (metering/api/ledger.py)."""
    billing = period.billing
    adjustments = [] if billing is None else [
        {"invoice_date": a.invoice_date.isoformat(), "reference": a.reference, "users": a.users}
        for a in billing.adjustments]
    return {
        "team": period.team,
        "period_start": period.period_start.isoformat(),
        "messages": period.messages,
        "received": period.received,
        "accepted": period.accepted,
        "rejected": period.rejected,
        "rejected_by_reason": dict(period.reasons),
        "duplicates": {"window": period.window_duplicates, "store_key": period.store_duplicates,
                       "total": period.duplicates},
        "written": period.written,
        "late": {"events": period.late, "adjusted_by": adjustments},
        "distinct_events": period.distinct_events,
        "stored_users": period.stored_users,
        "counted_users": period.counted_users,
        "billed": None if billing is None else {
            "invoice_date": billing.invoice_date.isoformat(), "reference": billing.reference,
            "users": billing.users, "adjusted": billing.adjusted, "adjustments": adjustments,
            "pending": billing.pending},
        "identities": [{"name": i.name, "holds": i.holds, "left": i.left, "right": i.right,
                        "note": i.note} for i in period.identities],
        "holds": not period.violations,
    }


def _invoice_name(invoice_date: date, reference: str) -> str:
    return f"{invoice_date} ref {reference}" if reference else str(invoice_date)


def _sides(period: PeriodLedger, identity: Identity) -> str:
    """The identity with its parts named, its sign from whether it holds."""
    sign = "=" if identity.holds is not False else "!="
    left, right = identity.left, identity.right
    if identity.name == "received":
        reasons = ", ".join(f"{reason}={n}" for reason, n in period.reasons)
        return (f"{left} {sign} accepted {period.accepted} + rejected "
                f"{period.rejected}{f' ({reasons})' if reasons else ''}")
    if identity.name == "accepted":
        return (f"{left} {sign} distinct stored {period.distinct_events} + "
                f"duplicates {right - period.distinct_events} (window "
                f"{period.window_duplicates}, store key {period.store_duplicates}); written "
                f"{period.written}")
    if identity.name == "users":
        if identity.holds is None:
            return f"counted {left}, {identity.note}"
        return f"counted {left} {sign} among stored events {right}"
    billing = period.billing
    assert billing is not None  # noqa: S101 - `billed` is checked for billed periods only
    booked = ", ".join(f"{_invoice_name(a.invoice_date, a.reference)} +{a.users}"
                       for a in billing.adjustments)
    return (f"{billing.users} on {_invoice_name(billing.invoice_date, billing.reference)}"
            f" + adjusted {billing.adjusted}{f' ({booked})' if booked else ''} + pending "
            f"{billing.pending} {sign} MAU {right}")


def period_text(period: PeriodLedger) -> str:
    """One period as a short block of text: a line per identity, with its verdict."""
    late = ""
    if period.late:
        booked = [] if period.billing is None else [
            f"{_invoice_name(a.invoice_date, a.reference)} +{a.users} users"
            for a in period.billing.adjustments]
        late = f", {period.late} late" + (f" (booked by {', '.join(booked)})" if booked else "")
    lines = [f"team {team_label(period.team)} period {period.period_start}: "
             f"{period.messages} message{'' if period.messages == 1 else 's'}{late}"]
    for identity in period.identities:
        verdict = {True: "ok", False: "VIOLATED", None: "not checked"}[identity.holds]
        lines.append(f"  {identity.name:<9}{_sides(period, identity)}: {verdict}")
    return "\n".join(lines)


def write_report(periods: Iterable[PeriodLedger], *, as_json: bool,
                 one: bool, out: TextIO, err: TextIO) -> int:
    """Print `periods` (text blocks, a JSON array, or with `one` the single period's JSON
    object) on `out` as they come, each violation as one line on `err`; the violations'
    count."""
    violations = teams = count = 0
    last_team: str | None = None
    if as_json and not one:
        out.write("[")
    for period in periods:
        if as_json:
            out.write(("" if one or not count else ",") + json.dumps(period_json(period)))
        else:
            out.write(("\n" if count else "") + period_text(period) + "\n")
        count += 1
        if period.team != last_team:
            teams, last_team = teams + 1, period.team
        for identity in period.violations:
            violations += 1
            err.write(violation_line(period.team, period.period_start, identity) + "\n")
    if as_json:
        out.write("\n" if one else "]\n")
    else:
        verdict = ("every identity holds" if not violations
                   else f"{violations} violation{'s' if violations > 1 else ''}")
        out.write(("\n" if count else "")
                  + f"reconciled {count} periods of {teams} teams: {verdict}\n")
    return violations
