"""Billing changes from `billing-changes`: decode and check one before it is stored (pure).

A change is stored only when the team's whole history, with it, still applies (the schedule
the close will replay), and when it does not reach back before an invoice already issued on
a billing date (that invoice would have been different; send a change effective now
instead). Anything else goes to `billing-changes-rejected` with one of these reasons.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from aggregation.store import StoredChange, StoredInvoice
from invoicing.schedule import ChangeError, schedule
from schemas.catalog import Catalog
from schemas.changes import BillingChange

__all__ = [
    "CHANGE_REJECT_REASONS",
    "ChangeRejection",
    "check_change",
    "decode_change",
    "in_effect_order",
    "to_stored",
]

DEFAULT_MAX_CHANGE_BYTES = 64 * 1024
ChangeRejectReason = Literal[
    "too_large", "not_utf8", "invalid_json", "invalid_change", "unknown_team", "refused",
    "late_change",
]
CHANGE_REJECT_REASONS: tuple[ChangeRejectReason, ...] = (
    "too_large", "not_utf8", "invalid_json", "invalid_change", "unknown_team", "refused",
    "late_change",
)


@dataclass(frozen=True, slots=True)
class ChangeRejection:
    reason: ChangeRejectReason
    detail: str
    raw: bytes


def decode_change(raw: bytes) -> BillingChange | ChangeRejection:
    if len(raw) > DEFAULT_MAX_CHANGE_BYTES:
        return ChangeRejection("too_large", f"{len(raw)} bytes > {DEFAULT_MAX_CHANGE_BYTES}", raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return ChangeRejection("not_utf8", f"invalid UTF-8 at byte {exc.start}", raw)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return ChangeRejection("invalid_json", f"{exc.msg} at line {exc.lineno} column "
                                               f"{exc.colno}", raw)
    try:
        return BillingChange.model_validate(obj)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        return ChangeRejection("invalid_change", f"{where}: {message}" if where else message,
                               raw)


def in_effect_order(changes: Sequence[BillingChange]) -> list[BillingChange]:
    """The order the store returns changes in: effective time, then source and id."""
    return sorted(changes, key=lambda c: (int(c.time.timestamp()), c.source, c.id))


def check_change(
    change: BillingChange,
    *,
    raw: bytes,
    catalog: Catalog,
    stored: Sequence[BillingChange],
    issued: Sequence[StoredInvoice],
) -> ChangeRejection | None:
    """Why `change` may not join the team's `stored` history; None when it may."""
    account = catalog.account(change.team)
    if account is None:
        return ChangeRejection("unknown_team", f"team {change.team!r} is not in the catalog", raw)
    zone = ZoneInfo(account.timezone)
    billed = [inv.invoice_date for inv in issued if not inv.reference]
    if billed:
        last = max(billed)
        if change.time < datetime.combine(last, time.min, tzinfo=zone):
            return ChangeRejection(
                "late_change",
                f"effective {change.time.isoformat()}, before the invoice of {last} that is "
                "already issued; send the change effective now", raw)
    history = in_effect_order([*stored, change])
    until = max(c.time for c in history).astimezone(zone).date()
    try:
        schedule(account, catalog, history, until=until)
    except ChangeError as exc:
        return ChangeRejection("refused", str(exc), raw)
    return None


def to_stored(change: BillingChange) -> StoredChange:
    return StoredChange(team=change.team, source=change.source, change_id=change.id,
                        time=change.time, body=change.model_dump_json())
