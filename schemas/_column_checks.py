"""The event contract's id rules (`schemas.limits`) on whole columns at once.

The fast path holds a batch's team and user ids as lists of strings. Each check joins a
column once and tests the joined text with one regex or one string method (C loops);
only when that finds something does it look event by event, with the same functions the
careful path's model uses, so both paths accept exactly the same ids.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

import numpy as np
import numpy.typing as npt

from schemas.limits import (
    TEAM_ID_PATTERN,
    USER_ID_MAX_CHARS,
    normal_user_id,
    team_id_problem,
    user_id_problem,
)

__all__ = ["ids_ok", "normal_user_ids"]

# Every team id of the column, each followed by a newline (which no team id holds)
_TEAMS: Final = re.compile(rf"(?:{TEAM_ID_PATTERN}\n)*")
# Whitespace at either end of a line (the lines being NFC user ids)
_END_SPACE: Final = re.compile(r"^\s|\s$", re.MULTILINE)


def normal_user_ids(users: list[str]) -> list[str]:
    """`users` in normal form C: the same list when all are ASCII (the usual case)."""
    if "".join(users).isascii():
        return users
    return list(map(normal_user_id, users))


def _teams_fine(teams: list[str]) -> bool:
    joined = "\n".join(teams)
    return (joined.count("\n") == len(teams) - 1
            and _TEAMS.fullmatch(joined + "\n") is not None)


def _users_fine(users: list[str]) -> bool:
    """True when every id of `users` (in NFC) is surely a user id; False when some may not
    be (the caller then asks each id)."""
    plain = "".join(users)
    if not plain.isprintable():  # controls, and what the careful check must look at
        return False
    # printable: no id holds a newline, so the lines of `joined` are the ids
    joined = "\n".join(users)
    if plain.isascii():
        # the Struct bounds the length; ASCII leaves only spaces at the ends to look for
        return not (joined.startswith(" ") or joined.endswith(" ") or "\n " in joined
                    or " \n" in joined)
    return (unicodedata.is_normalized("NFC", joined)
            and max(map(len, users)) <= USER_ID_MAX_CHARS
            and _END_SPACE.search(joined) is None)


def ids_ok(teams: list[str], users: list[str]) -> npt.NDArray[np.bool_] | None:
    """None when every team id and (NFC) user id is valid, else which events' ids are."""
    if not teams or (_teams_fine(teams) and _users_fine(users)):
        return None
    return np.fromiter(
        (team_id_problem(team) is None and user_id_problem(user) is None
         for team, user in zip(teams, users, strict=True)),
        dtype=np.bool_, count=len(teams))
