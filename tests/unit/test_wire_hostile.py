"""Hostile events, as an attacker sends them: each finding of the hostile pass is a test.

Every case runs through both decoders the worker uses (`decode_message`, the careful path
and what `metering emit` validates with, and `decode_batch`, the hot path), which must
agree event for event and rejection for rejection.
"""

from __future__ import annotations

import json
import unicodedata
from datetime import UTC, datetime
from typing import Any

import pytest

from metering.producer import event_records
from schemas import DEFAULT_MAX_EVENT_BYTES, Decoded, decode_batch, decode_message
from tests.builders import cloud_event

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def event(ident: str = "e-1", team: str = "team-a", user: str = "u-1",
          **overrides: Any) -> dict[str, Any]:
    return cloud_event(ident, team, user, "2026-11-30T08:00:00Z", **overrides)


def compact(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def decoded_both_ways(raw: bytes) -> Decoded:
    """`decode_message` on `raw`, checked against `decode_batch` on the same message."""
    decoded = decode_message(raw, now=NOW)
    batch = decode_batch([raw], now=NOW)
    assert batch.events.event_id == [e.id for e in decoded.events]
    assert batch.events.team == [e.team for e in decoded.events]
    assert batch.events.user_id == [e.user_id for e in decoded.events]
    assert batch.rejections.get(0, []) == decoded.rejections
    return decoded


# --- 1. a good event is never lost beside a pathological mate -------------------------------

GOOD = compact(event("good"))
PATHOLOGICAL = [
    pytest.param(b"[" * 3000 + b"]" * 3000, id="3000-deep-array"),
    pytest.param(compact(event("deep", data={"user_id": "u", "x": []})).replace(
        b"[]", b"[" * 3000 + b"]" * 3000), id="3000-deep-inside-an-event"),
    pytest.param(b"9" * 5000, id="5000-digit-number"),
    pytest.param(compact(event("digits", data={"user_id": "u", "n": 0})).replace(
        b'"n":0', b'"n":' + b"9" * 5000), id="5000-digits-inside-an-event"),
    pytest.param(b'{"specversion": tru}', id="not-json"),
    pytest.param(b"NaN", id="NaN"),
]


@pytest.mark.parametrize("mate", PATHOLOGICAL)
@pytest.mark.parametrize("good_first", [True, False], ids=["good-first", "good-last"])
def test_a_good_event_counts_beside_a_pathological_mate(mate: bytes, good_first: bool) -> None:
    members = [GOOD, mate] if good_first else [mate, GOOD]
    decoded = decoded_both_ways(b"[" + b", ".join(members) + b"]")
    assert [e.id for e in decoded.events] == ["good"]
    assert decoded.raws == [GOOD]
    [rejection] = decoded.rejections
    assert rejection.reason in {"invalid_json", "invalid_event"}
    assert rejection.raw == mate  # the member's own bytes, not the batch


def test_an_array_that_cannot_be_taken_apart_is_rejected_whole() -> None:
    for raw in (b"[" + GOOD + b', "never ends]', b"[" + GOOD + b", [[}]", b"[" + GOOD + b"] x",
                b"[" + GOOD + b", " + b"[" * 3000):
        decoded = decoded_both_ways(raw)
        assert decoded.events == []
        [rejection] = decoded.rejections
        assert (rejection.reason, rejection.raw) == ("invalid_json", raw)


# --- 2. one size rule: the event's own bytes, however it travels ---------------------------

BIG = compact(event("big", data={"user_id": "u", "note": "é" * 40_000}))  # 80 KB of UTF-8
BAD_MATE = compact(event("bad", type="logout"))


@pytest.mark.parametrize("raw", [
    pytest.param(BIG, id="alone"),
    pytest.param(b"[" + BIG + b"]", id="alone-in-a-batch"),
    pytest.param(b"[" + BIG + b"," + BAD_MATE + b"]", id="beside-a-bad-mate"),
    pytest.param(b"[" + BIG + b"," + GOOD + b"]", id="beside-a-good-mate"),
])
def test_an_event_over_the_limit_is_too_large_however_it_travels(raw: bytes) -> None:
    assert DEFAULT_MAX_EVENT_BYTES < len(BIG) == 80_153
    decoded = decoded_both_ways(raw)
    too_large = [r for r in decoded.rejections if r.reason == "too_large"]
    assert [(r.raw, r.detail) for r in too_large] == [(BIG, "80153 bytes > 65536")]
    assert "big" not in [e.id for e in decoded.events]


def test_whitespace_counts_toward_an_events_own_bytes_alone_and_in_a_batch() -> None:
    padded = GOOD[:-1] + b" " * DEFAULT_MAX_EVENT_BYTES + b"}"
    for raw in (padded, b"[" + padded + b"]", b"[" + GOOD + b",\n" + padded + b"\n]"):
        decoded = decoded_both_ways(raw)
        assert [r.reason for r in decoded.rejections] == ["too_large"]
        assert decoded.rejections[0].raw == padded


def test_emit_sends_each_event_as_its_own_bytes_and_rejects_what_the_worker_would() -> None:
    """`metering emit` used to report "sent" for a batch line whose member the worker then
    rejected (it re-encoded members with \\u escapes, three times their size)."""
    accented = compact(event("accented", user="zoë", data={"user_id": "zoë", "n": "é" * 20_000}))
    line = b"[" + BIG + b", " + accented + b" ," + BAD_MATE + b"]"
    records, problems = event_records(line, now=NOW)
    assert records == [("team-a", accented)]
    assert [reason for reason, _ in problems] == ["too_large", "unknown_type"]
    # what emit sends, the worker takes unchanged
    [(_, sent)] = records
    assert [e.id for e in decoded_both_ways(sent).events] == ["accented"]


# --- 3. team ids and user ids ---------------------------------------------------------------

@pytest.mark.parametrize("team", ["team-a\nteam-b", "team-a/../team-b", "team-a ", " team-a",
                                  "..", ".", "-a", "team\u00e9", "a" * 129, "", "a\u200bb"])
def test_a_subject_that_is_not_a_team_id_is_rejected(team: str) -> None:
    for raw in (compact(event(team=team)), b"[" + compact(event(team=team)) + b"," + GOOD + b"]"):
        decoded = decoded_both_ways(raw)
        assert [e.id for e in decoded.events] == ([] if raw[:1] == b"{" else ["good"])
        [rejection] = decoded.rejections
        assert rejection.reason == "invalid_event"
        assert rejection.detail.startswith("subject: ")
        assert "\n" not in rejection.detail


@pytest.mark.parametrize("user", ["u-1 ", "\tu", "u\n", "a\u200bb", "a\u2028b", "\x7f",
                                  "\u00a0", "x" * 257, "e\u0301" * 257])
def test_a_user_id_out_of_shape_is_rejected(user: str) -> None:
    decoded = decoded_both_ways(compact(event(user=user)))
    [rejection] = decoded.rejections
    assert rejection.reason == "invalid_event"
    assert rejection.detail.startswith("data.user_id: ")


@pytest.mark.parametrize("user", ["zoë", "Ångström", "한국", "e\u0301" * 256, "a\u00a0b",
                                  "😀", "ｆｕｌｌ", "mailto:u@example.com"])
def test_one_user_in_any_canonical_form_counts_once(user: str) -> None:
    forms = {unicodedata.normalize(form, user) for form in ("NFC", "NFD")}
    members = [compact(event(f"e{i}", user=form)) for i, form in enumerate(sorted(forms))]
    for values in ([b"[" + b",".join(members) + b"]"], members):
        batch = decode_batch(values, now=NOW)
        assert batch.rejections == {}
        assert set(batch.events.user_id) == {unicodedata.normalize("NFC", user)}
        for raw in values:
            for taken in decode_message(raw, now=NOW).events:
                assert taken.user_id == unicodedata.normalize("NFC", user)


def test_compatibility_forms_stay_two_users() -> None:
    """NFC, not NFKC: "ﬁ" and "fi" may be two people's ids."""
    batch = decode_batch([compact([event("a", user="ﬁ"), event("b", user="fi")])], now=NOW)
    assert batch.events.user_id == ["ﬁ", "fi"]
