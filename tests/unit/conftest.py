"""Fixtures the in-process agent tests share (tests/unit/test_agents.py,
test_payments_agent.py)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest


@pytest.fixture
def unused_broker() -> Iterator[int]:
    """A port where the broker would be: a connection attempt would wait in its backlog."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        yield listener.getsockname()[1]
        with pytest.raises(BlockingIOError):
            listener.accept()
