"""The worker's pure helpers: consumer lag per partition (metering.stream.timers) and the log
fields of a batch or a message (metering.stream.agent_io, shared by the agents). No broker:
Faust's own TP and Message types, and events that only carry a message."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from faust.types import TP, EventT, Message

from metering.stream.agent_io import batch_context, message_context
from metering.stream.timers import consumer_lag

EVENTS = "activity-events"


def message(partition: int, offset: int, key: bytes | None = b"team-acme",
            topic: str = EVENTS) -> Message:
    return Message(topic, partition, offset, timestamp=0.0, timestamp_type=0, headers=None,
                   key=key, value=b"{}", checksum=None, tp=TP(topic, partition))


@dataclass
class FakeEvent:
    """What batch_context reads of a Faust event: its message."""

    message: Message


def batch(*messages: Message) -> Sequence[EventT[bytes]]:
    return cast(Sequence[EventT[bytes]], [FakeEvent(m) for m in messages])


def test_lag_is_highwater_minus_position_per_partition() -> None:
    highwaters: dict[TP, int | None] = {TP(EVENTS, 0): 100, TP(EVENTS, 1): 7}
    consumed: dict[TP, int | None] = {TP(EVENTS, 0): 40, TP(EVENTS, 1): 7}
    assert consumer_lag(highwaters, consumed) == {(EVENTS, 0): 60, (EVENTS, 1): 0}


def test_partition_without_fetch_or_position_has_no_lag() -> None:
    highwaters: dict[TP, int | None] = {
        TP(EVENTS, 0): None,  # assigned, nothing fetched yet
        TP(EVENTS, 1): 10,    # fetched, position unknown
        TP(EVENTS, 2): 10,    # position missing from the map altogether
        TP(EVENTS, 3): 5,
    }
    consumed: dict[TP, int | None] = {TP(EVENTS, 0): 3, TP(EVENTS, 1): None, TP(EVENTS, 3): 2}
    assert consumer_lag(highwaters, consumed) == {(EVENTS, 3): 3}


def test_lag_never_goes_negative() -> None:
    """The high watermark comes from the last fetch; the position may already be past it."""
    highwaters: dict[TP, int | None] = {TP(EVENTS, 0): 10}
    consumed: dict[TP, int | None] = {TP(EVENTS, 0): 12}
    assert consumer_lag(highwaters, consumed) == {(EVENTS, 0): 0}


def test_lag_of_nothing_assigned_is_empty() -> None:
    assert consumer_lag({}, {TP(EVENTS, 0): 1}) == {}


def test_lag_keys_carry_topic_and_partition() -> None:
    other = "other-events"
    highwaters: dict[TP, int | None] = {TP(EVENTS, 0): 5, TP(other, 0): 9}
    consumed: dict[TP, int | None] = {TP(EVENTS, 0): 5, TP(other, 0): 1}
    assert consumer_lag(highwaters, consumed) == {(EVENTS, 0): 0, (other, 0): 8}


def test_batch_context_spans_offsets_per_partition_sorted() -> None:
    context = batch_context(batch(
        message(3, 41), message(1, 7), message(3, 39), message(1, 8), message(3, 45),
    ))
    assert context == {"topic": EVENTS, "partitions": [1, 3], "offsets": [[7, 8], [39, 45]]}


def test_batch_context_of_one_message() -> None:
    assert batch_context(batch(message(0, 12))) == {
        "topic": EVENTS, "partitions": [0], "offsets": [[12, 12]]}


def test_batch_context_of_an_empty_batch_names_nothing() -> None:
    assert batch_context(batch()) == {"topic": "", "partitions": [], "offsets": []}


def test_message_context_names_topic_partition_offset_and_team() -> None:
    assert message_context(message(2, 99)) == {
        "topic": EVENTS, "partition": 2, "offset": 99, "team": "team-acme"}


def test_message_context_without_key_has_no_team() -> None:
    assert message_context(message(0, 1, key=None)) == {
        "topic": EVENTS, "partition": 0, "offset": 1}
    assert "team" not in message_context(message(0, 1, key=b""))


def test_message_context_of_a_key_that_is_not_utf8_still_logs() -> None:
    context = message_context(message(0, 1, key=b"team-\xff"))
    assert context["team"] == "team-\ufffd"
