"""The bounds every input is held to, in one place: dates, sizes, team and user ids.

- **Dates.** The store's `Date` (ClickHouse 18.16) reads back only 1970-01-02..2105-12-31;
  a day outside it is stored as another day or as `0000-00-00`. Every date a user gives
  (catalog start dates, change dates, `--as-of`, `--at`) and every event time lies within
  FIRST_DATE..LAST_DATE, a year inside that range, so that every period, due date and
  local day derived from them (an annual period, a zone 14 hours away) is inside it too.
- **Sizes.** An event is at most DEFAULT_MAX_EVENT_BYTES of its own bytes, as they travel:
  the message for a single event, the member's own text for a member of a batch (the same
  in `metering emit`, the HTTP ingest and the worker).
- **Team ids** (an event's `subject`, a catalog account's `team`): 1..TEAM_ID_MAX_CHARS
  ASCII letters, digits, ".", "_" and "-", starting with a letter or a digit, so that a team
  id is one safe path segment of the API (never "." or "..", no "/", no spaces). Case
  matters: "Acme" and "acme" are two teams.
- **User ids** (`data.user_id`): counted in Unicode normal form C, so that the same id sent
  composed or decomposed is one user; 1..USER_ID_MAX_CHARS characters after normalising,
  no control, format or separator characters (categories Cc, Cf, Cs, Zl, Zp) and no
  whitespace at either end. Compatibility forms (NFKC) are not merged: "ﬁ" and "fi" may be
  two people's ids.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime, time
from typing import Final

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "EARLIEST_TIME",
    "FIRST_DATE",
    "LAST_DATE",
    "LATEST_TIME",
    "TEAM_ID_MAX_CHARS",
    "TEAM_ID_PATTERN",
    "USER_ID_MAX_CHARS",
    "date_problem",
    "stored_time",
    "normal_user_id",
    "team_id_problem",
    "user_id_problem",
    "PAYMENT_TERMS_PATTERN",
]

FIRST_DATE: Final = date(1971, 1, 1)
LAST_DATE: Final = date(2104, 12, 31)
EARLIEST_TIME: Final = datetime.combine(FIRST_DATE, time(0), tzinfo=UTC)
LATEST_TIME: Final = datetime.combine(LAST_DATE, time(23, 59, 59), tzinfo=UTC)

DEFAULT_MAX_EVENT_BYTES: Final = 64 * 1024

TEAM_ID_MAX_CHARS: Final = 128
TEAM_ID_PATTERN: Final = rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{TEAM_ID_MAX_CHARS - 1}}}"
_TEAM_ID: Final = re.compile(TEAM_ID_PATTERN)
USER_ID_MAX_CHARS: Final = 256
_FORBIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_QUOTED_CHARS: Final = 64


def _quoted(text: str) -> str:
    shown = ascii(text[:_QUOTED_CHARS])
    return shown if len(text) <= _QUOTED_CHARS else shown[:-1] + "…" + shown[-1]


def team_id_problem(team: str) -> str | None:
    """Why `team` is not a team id, or None."""
    if _TEAM_ID.fullmatch(team) is not None:
        return None
    if not team:
        return "a team id must not be empty"
    if len(team) > TEAM_ID_MAX_CHARS:
        return f"a team id has at most {TEAM_ID_MAX_CHARS} characters, not {len(team)}"
    return (f"team id {_quoted(team)} must be ASCII letters, digits, '.', '_' and '-', "
            "starting with a letter or digit")


def normal_user_id(user_id: str) -> str:
    """`user_id` in normal form C (ASCII text is already)."""
    return user_id if user_id.isascii() else unicodedata.normalize("NFC", user_id)


def user_id_problem(user_id: str) -> str | None:
    """Why `user_id` (already in normal form C) is not a user id, or None."""
    if not 1 <= len(user_id) <= USER_ID_MAX_CHARS:
        return f"a user id has 1 to {USER_ID_MAX_CHARS} characters, not {len(user_id)}"
    if user_id != user_id.strip():
        return f"user id {_quoted(user_id)} has whitespace at an end"
    for char in user_id:
        if (not char.isprintable() and char != " "
                and unicodedata.category(char) in _FORBIDDEN_CATEGORIES):
            return (f"user id {_quoted(user_id)} holds {ascii(char)}, a control, format or "
                    "separator character")
    return None


def date_problem(day: date, what: str) -> str | None:
    """Why `day` (named `what` in the message) is outside FIRST_DATE..LAST_DATE, or None."""
    if FIRST_DATE <= day <= LAST_DATE:
        return None
    return (f"{what} {day.isoformat()} is outside {FIRST_DATE.isoformat()}.."
            f"{LAST_DATE.isoformat()}, the dates the store holds")


# Invoiced billing: "NET n", due n days after the invoice date (seed 000: NET-30 on PO).
PAYMENT_TERMS_PATTERN: Final = r"^NET [1-9][0-9]{0,2}$"


def stored_time(value: datetime, what: str = "time") -> datetime:
    """`value` (an aware instant) if its UTC date lies within FIRST_DATE..LAST_DATE; else a
    ValueError saying so (a field validator of billing changes and payment outcomes)."""
    try:
        day = value.astimezone(UTC).date()
    except OverflowError:  # year 1 or 9999 with an offset: the local date says as much
        day = value.date()
    problem = date_problem(day, what)
    if problem:
        raise ValueError(problem)
    return value
