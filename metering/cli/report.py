"""Plain-text tables for the terminal."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from aggregation import ActiveUserRow
from invoicing import Access
from schemas import Invoice, Period

_INVOICE_ROW = "{:<16} {:<10} {:<9} {:<44} {:>6} {:>9} {:>10}"
_USAGE_ROW = "{:<24} {:<20} {:<12} {}"
_ACCESS_ROW = "{:<21} {}"


INVOICE_HEADER = _INVOICE_ROW.format("TEAM", "DATE", "KIND", "DESCRIPTION", "QTY", "UNIT",
                                     "AMOUNT")
NO_INVOICES = "(no invoices due)"


def invoice_rows(inv: Invoice) -> list[str]:
    """The table rows of one invoice: its lines, then tax and total."""
    out = []
    for index, line in enumerate(inv.lines):
        out.append(_INVOICE_ROW.format(
            inv.team if index == 0 else "", str(inv.invoice_date) if index == 0 else "",
            line.kind, line.description[:44], line.quantity, line.unit_price, line.amount,
        ))
    out.append(_INVOICE_ROW.format("", "", "", "", "", "tax", inv.tax))
    out.append(_INVOICE_ROW.format("", "", "", "", "", "total", f"{inv.total} {inv.currency}"))
    return out


def invoice_table(invoices: Sequence[Invoice]) -> str:
    out = [INVOICE_HEADER]
    for inv in invoices:
        out.extend(invoice_rows(inv))
    if not invoices:
        out.append(NO_INVOICES)
    return "\n".join(out)


def usage_table(team: str, period: Period, users: Sequence[ActiveUserRow]) -> str:
    out = [
        f"{team}: {len(users)} active users from {period.start} to {period.end}",
        _USAGE_ROW.format("USER", "FIRST EVENT (UTC)", "TYPE", "EVENT"),
    ]
    out.extend(
        _USAGE_ROW.format(u.user_id, u.first_time.strftime("%Y-%m-%d %H:%M:%S"), u.event_type,
                          f"{u.source}/{u.event_id}")
        for u in users
    )
    return "\n".join(out)


def _utc_text(moment: datetime) -> str:
    """RFC 3339 in UTC with a Z, as the read API writes a moment."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def access_json(access: Access) -> dict[str, object]:
    """A team's access as GET /v1/teams/{team}/access answers it: the same fields, the
    same texts."""
    return {
        "team": access.team, "state": access.state,
        "since": None if access.since is None else _utc_text(access.since),
        "why": access.why, "login_allowed": access.login_allowed,
        "billing_paused_until": (None if access.billing_paused_until is None
                                 else access.billing_paused_until.isoformat()),
    }


def access_table(access: Access) -> str:
    """A team's access as `metering status` shows it: one field a row; the billing pause
    only while there is one."""
    since = ("since the start" if access.since is None
             else access.since.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))
    rows = [("team", access.team), ("state", access.state), ("since", since),
            ("login allowed", "yes" if access.login_allowed else "no"), ("why", access.why)]
    if access.billing_paused_until is not None:
        rows.append(("billing paused until", access.billing_paused_until.isoformat()))
    return "\n".join(_ACCESS_ROW.format(name, value) for name, value in rows)
