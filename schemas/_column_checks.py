"""The event contract's id rules (`schemas.limits`) on whole columns at once.

The fast path holds a batch's team and user ids as lists of strings. Each check joins a
column once, one id per line, maps every byte to its class with one `bytes.translate` and
searches the classes for what may not be there (C loops, a few nanoseconds an id); only
when that finds something, or the user ids are not all printable ASCII, does it ask id by
id with the same functions the careful path's model uses, so both
paths accept exactly the same ids. Lengths are bounded by the fast path's Structs (a team
id's 128 characters, a user id's 256: ASCII ids keep their length in normal form C).
"""

from __future__ import annotations

import unicodedata
from typing import Final

import numpy as np
import numpy.typing as npt

from schemas.limits import (
    USER_ID_MAX_CHARS,
    normal_user_id,
    team_id_problem,
    user_id_problem,
)

__all__ = ["ids_ok", "normal_user_ids"]

def _table(classes: dict[bytes, bytes]) -> bytes:
    """A bytes.translate table sending each byte of a key to its class, any other to "x"."""
    table = bytearray(b"x" * 256)
    for members, name in classes.items():
        for byte in members:
            table[byte] = name[0]
    return bytes(table)


_ALNUM: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
# A team id's bytes: "a" a letter or digit, "p" the punctuation allowed after the first
_TEAM_CLASSES: Final = _table({_ALNUM: b"a", b"._-": b"p", b"\n": b"\n"})
# A user id's ASCII bytes: "a" printable, " " the space (not at an end), "x" anything else
_USER_CLASSES: Final = _table({bytes(range(0x21, 0x7F)): b"a", b" ": b" ", b"\n": b"\n"})


def _classes(ids: list[str], table: bytes) -> bytes | None:
    """The ids, one per line, each byte as its class in `table`; None when an id holds a
    newline itself (and is then no id)."""
    joined = "\n".join(ids).encode("utf-8", "surrogatepass").translate(table)
    return joined if joined.count(b"\n") == len(ids) - 1 else None


def _teams_fine(teams: list[str]) -> bool:
    classes = _classes(teams, _TEAM_CLASSES)
    return (classes is not None and b"x" not in classes and not classes.startswith(b"p")
            and b"\np" not in classes)


def _users_fine(users: list[str]) -> bool:
    """True when every id of `users` (in NFC) is surely a user id; False when some may not
    be (the caller then asks each id)."""
    classes = _classes(users, _USER_CLASSES)
    if classes is None:
        return False
    if b"x" in classes:
        # beyond printable ASCII: in normal form C, every character printable, no space at
        # the ends
        text = "\n".join(users)
        return (unicodedata.is_normalized("NFC", text)
                and max(map(len, users)) <= USER_ID_MAX_CHARS
                and text.replace("\n", "").isprintable()
                and not any(user[0].isspace() or user[-1].isspace() for user in users))
    return not (classes.startswith(b" ") or classes.endswith(b" ") or b"\n " in classes
                or b" \n" in classes)


def normal_user_ids(users: list[str]) -> list[str]:
    """`users` in normal form C: the same list when all are ASCII (the usual case)."""
    if "".join(users).isascii():
        return users
    return list(map(normal_user_id, users))


def ids_ok(teams: list[str], users: list[str]) -> npt.NDArray[np.bool_] | None:
    """None when every team id and (NFC) user id is valid, else which events' ids are."""
    if not teams or (_teams_fine(teams) and _users_fine(users)):
        return None
    return np.fromiter(
        (team_id_problem(team) is None and user_id_problem(user) is None
         for team, user in zip(teams, users, strict=True)),
        dtype=np.bool_, count=len(teams))
