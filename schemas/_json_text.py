"""JSON text as the wire decoder reads it: a batch split into its members' own bytes, and
one member read strictly (each key once, nothing a JSON writer could not write again).

Neither function raises for any input, however deep or long: a problem is returned as a
one-line text for the decoder's `invalid_json` rejection.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any, Final

import msgspec

__all__ = ["DEFAULT_MAX_DEPTH", "json_problem", "read_json", "split_array"]

# Levels of arrays and objects in one event or change, itself the first. Python's parser
# reads about 990 before it runs out of stack; 200 leaves room and is far beyond any event.
DEFAULT_MAX_DEPTH: Final = 200

_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_MEMBERS: Final = msgspec.json.Decoder(list[msgspec.Raw])
# What splitting a batch needs to see: whole strings (whatever they hold), a lone quote (a
# string that never ends), brackets and commas. Everything else is inside a member.
_TOKENS: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|"|[\[\]{},]', re.S)
_WHITESPACE: Final = b" \t\r\n"


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return value


def _too_deep() -> str:
    return f"invalid JSON: nested deeper than {DEFAULT_MAX_DEPTH} levels"


def json_problem(value: Any, *, level: int = 1) -> str | None:
    """Why a value Python's parser read is not JSON that can be written out again, or None.

    Python's parser reads NaN and Infinity, turns 1e999 into infinity and lets "\\ud800"
    through as a lone surrogate, which no UTF-8 text holds. `level` is the nesting level of
    `value` when it is an array or object. Iterative, so that no nesting exhausts the stack.
    """
    pending: list[tuple[Any, int]] = [(value, level)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: list[Any] = [*item, *item.values()]
        elif isinstance(item, list):
            children = item
        elif isinstance(item, str):
            surrogate = _SURROGATE.search(item)
            if surrogate is not None:
                return (f"invalid JSON: lone surrogate {ascii(surrogate.group())[1:-1]} "
                        "in a string is not Unicode text")
            continue
        elif isinstance(item, float) and not math.isfinite(item):
            return "invalid JSON: NaN, Infinity or a number beyond the float range"
        else:
            continue
        if depth > DEFAULT_MAX_DEPTH:
            return _too_deep()
        pending.extend((child, depth + 1) for child in children)
    return None


def read_json(text: str) -> tuple[Any, str | None]:
    """The value of `text` and None, or None and why it is not strict JSON: a syntax error,
    a key given twice in one object, NaN or Infinity, a number beyond the float range, a
    lone surrogate, an integer of thousands of digits, nesting beyond DEFAULT_MAX_DEPTH."""
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        return None, f"invalid JSON: key {json.dumps(str(exc))[:80]} given twice in an object"
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc}"
    except ValueError:
        # The parser's only other ValueError: an integer literal longer than Python converts
        # from text (its guard against quadratic-time conversion).
        return None, ("invalid JSON: an integer longer than "
                      f"{sys.get_int_max_str_digits()} digits")
    except RecursionError:
        return None, _too_deep()
    problem = json_problem(value)
    return (None, problem) if problem is not None else (value, None)


def split_array(raw: bytes) -> list[bytes] | str:
    """The members of the JSON array `raw` (which starts with "[" after whitespace), each
    as its own bytes without the whitespace around it; or why the array itself cannot be
    taken apart (a string or bracket that never closes, text after the array).

    Members are only delimited here, not read: a member that is not JSON is still one
    member, rejected on its own by its reader, so a good event never shares a bad one's fate.
    """
    try:
        return [bytes(member) for member in _MEMBERS.decode(raw)]
    except (msgspec.DecodeError, RecursionError):
        return _split_by_tokens(raw)


def _split_by_tokens(raw: bytes) -> list[bytes] | str:
    """`split_array` for what msgspec refuses (a member that is not JSON, nesting beyond its
    limit): one step per string, bracket and comma, no recursion."""
    members: list[bytes] = []
    depth = 0
    start = 0
    for token in _TOKENS.finditer(raw):
        at = token.start()
        char = raw[at]
        if char == 0x22:  # '"'
            if token.end() - at == 1:
                return "invalid JSON: a string in the array never ends"
        elif char in b"[{":
            depth += 1
            if depth == 1:
                start = token.end()
        elif char in b"]}":
            depth -= 1
            if depth == 0:
                if char != 0x5D:  # ']'
                    return "invalid JSON: the array's brackets do not match"
                last = raw[start:at].strip(_WHITESPACE)
                if last or members:
                    members.append(last)
                if raw[token.end():].strip(_WHITESPACE):
                    return "invalid JSON: text after the array"
                return members
        elif depth == 1:  # a comma between members
            members.append(raw[start:at].strip(_WHITESPACE))
            start = token.end()
    return "invalid JSON: the array never ends"
