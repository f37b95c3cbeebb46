"""The bearer token check the API and the usage page share."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

__all__ = ["token_matches"]


def token_matches(given: str, tokens: Iterable[bytes]) -> bool:
    """Whether `given` is one of `tokens`, compared with every one in constant time, so the
    time taken does not tell which one is close."""
    encoded = given.encode()
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(encoded, token)
    return matched
