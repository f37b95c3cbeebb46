"""128-bit keys (`hash_keys`, `unique_first`) and `KeyTable`, plain and as a ring, against
Python models."""

from __future__ import annotations

import subprocess
import sys
from collections import deque

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.stream import keys as keys_module
from metering.stream.keys import Keys, KeyTable, hash_keys, unique_first

Key = tuple[int, int]
Parts = tuple[str, str | int] | tuple[str, str | int, str]
MAX_U64 = 2**64 - 1


def as_tuples(keys: Keys) -> list[Key]:
    return [(int(high), int(low)) for high, low in keys.tolist()]


def as_keys(tuples: list[Key]) -> Keys:
    return np.array(tuples, dtype=np.uint64).reshape(-1, 2)


def random_keys(rng: np.random.Generator, count: int) -> Keys:
    return rng.integers(0, MAX_U64, size=(count, 2), dtype=np.uint64, endpoint=True)


def one(first: str, second: str | int, third: str | None = None) -> Key:
    """The key of a single tuple."""
    return as_tuples(hash_keys([first], [second], None if third is None else [third]))[0]


# --- hash_keys ----------------------------------------------------------------------------

def test_one_key_per_row_as_two_uint64() -> None:
    keys = hash_keys(["t1", "t2", "t1"], [1, 2, 1], ["u", "u", "u"])
    assert keys.dtype == np.uint64 and keys.shape == (3, 2)
    assert keys.flags.writeable and keys.flags.c_contiguous
    rows = as_tuples(keys)
    assert rows[0] == rows[2] != rows[1]
    assert hash_keys([], []).shape == (0, 2)
    assert hash_keys([], [], []).shape == (0, 2)


def test_the_key_is_a_function_of_the_tuple_alone() -> None:
    """The same tuple has the same key whatever the batch, its row or the calls between."""
    column = hash_keys(["a", "b", "c"], ["x", "y", "z"])
    assert as_tuples(column) == [one("a", "x"), one("b", "y"), one("c", "z")]
    assert as_tuples(hash_keys(["c", "a"], ["z", "x"])) == [one("c", "z"), one("a", "x")]
    assert as_tuples(hash_keys(["a"] * 3, ["x"] * 3)) == [one("a", "x")] * 3


@pytest.mark.parametrize(("left", "right"), [
    (("ab", "c"), ("a", "bc")),
    (("", "abc"), ("abc", "")),
    (("", "", "a"), ("", "a", "")),
    (("1:a", "b"), ("1", ":ab")),
    (("2:ab", ""), ("2", ":ab")),
    (("a", "1:b", "c"), ("a1", ":b", "c")),
    (("10", "x"), ("1", "0x")),
    (("t", 1, "u"), ("t", 11, "")),
    (("t", 12, "u"), ("t", 1, "2u")),
    (("é", "x"), ("e\u0301", "x")),  # precomposed vs combining accent
    (("ü", "ab"), ("üa", "b")),
    (("日本", "語"), ("日", "本語")),
    (("\x00", "a"), ("", "\x00a")),
])
def test_different_tuples_have_different_keys(left: Parts, right: Parts) -> None:
    assert one(*left) != one(*right)


def test_integer_parts_are_keyed_by_their_decimal_text() -> None:
    """The worker keys (team, period start day, user): the day column is ints, from a numpy
    array or its `.tolist()`. A part is hashed as its text, so an int and its decimal string
    give one key: harmless, since a column holds one type."""
    days = np.array([20_000, -3, 0], dtype=np.int32)
    from_list = hash_keys(["t"] * 3, days.tolist(), ["u"] * 3)
    assert as_tuples(from_list) == as_tuples(hash_keys(["t"] * 3, list(days), ["u"] * 3))
    assert as_tuples(from_list) == as_tuples(hash_keys(["t"] * 3, ["20000", "-3", "0"],
                                                       ["u"] * 3))
    assert len(set(as_tuples(from_list))) == 3
    assert one("x", 1) != one("x", 2) != one("x", -2) != one("x", 12)
    assert one("a", 7) == one("a", "7") != one("a", 70)
    assert one("a", 7, "b") == one("a", "7", "b") != one("a", 7, "")


def test_non_ascii_parts() -> None:
    """Lengths count characters, the text is hashed as UTF-8: still one key per tuple."""
    tuples = [("ü", "x"), ("üx", ""), ("u", "x"), ("ÿ", "x"), ("😀", "a"), ("😀a", ""),
              ("a", "😀"), ("\u00e9", "b"), ("e\u0301", "b"), ("e", "\u0301b")]
    keys = as_tuples(hash_keys([t[0] for t in tuples], [t[1] for t in tuples]))
    assert len(set(keys)) == len(tuples)
    assert keys == [one(*t) for t in tuples]


def test_the_seed_is_drawn_per_process() -> None:
    # The module alone, not its package (quicker to import)
    code = ("import importlib.util as u, sys; "
            "spec = u.spec_from_file_location('keys', sys.argv[1]); "
            "keys = u.module_from_spec(spec); spec.loader.exec_module(keys); "
            "print(keys.hash_keys(['team'], ['user']).tolist())")
    other = subprocess.run([sys.executable, "-c", code, keys_module.__file__ or ""],
                           check=True, capture_output=True, text=True).stdout.strip()
    assert other.startswith("[[")
    assert other != str(hash_keys(["team"], ["user"]).tolist())


TEXT = st.text(max_size=4)  # any characters but surrogates, which the decoder rejects
MIDDLE = st.one_of(TEXT, st.integers(-10**6, 10**6))
TUPLES = st.one_of(st.lists(st.tuples(TEXT, MIDDLE), min_size=1, max_size=30),
                   st.lists(st.tuples(TEXT, MIDDLE, TEXT), min_size=1, max_size=30))


@settings(max_examples=60)
@given(rows=TUPLES)
def test_keys_are_equal_exactly_when_tuples_are(rows: list[Parts]) -> None:
    """(first, second) or (first, second, third); the second part a string or an int,
    keyed by its text."""
    columns = [list(column) for column in zip(*rows, strict=True)]
    keys = as_tuples(hash_keys(*columns))
    canonical = [tuple(str(part) for part in row) for row in rows]
    by_tuple: dict[tuple[str, ...], Key] = {}
    for row, key in zip(canonical, keys, strict=True):
        assert by_tuple.setdefault(row, key) == key
    assert len(set(by_tuple.values())) == len(by_tuple)


# --- unique_first -------------------------------------------------------------------------

def test_unique_first_keeps_each_first_occurrence_in_order() -> None:
    keys = as_keys([(5, 1), (1, 5), (5, 1), (0, 0), (1, 5), (1, 6), (0, 0)])
    assert unique_first(keys).tolist() == [0, 1, 3, 5]
    assert unique_first(keys).dtype == np.intp
    assert unique_first(as_keys([])).tolist() == []
    # only the high or only the low half equal: different keys
    assert unique_first(as_keys([(1, 2), (1, 3), (2, 2)])).tolist() == [0, 1, 2]


@given(st.lists(st.tuples(st.sampled_from([0, 1, MAX_U64]), st.sampled_from([0, 2, MAX_U64])),
                max_size=40))
def test_unique_first_against_a_model(tuples: list[Key]) -> None:
    expected: dict[Key, int] = {}
    for row, key in enumerate(tuples):
        expected.setdefault(key, row)
    assert unique_first(as_keys(tuples)).tolist() == sorted(expected.values())


# --- KeyTable -----------------------------------------------------------------------------

def check_plain(table: KeyTable, model: list[Key], probes: Keys) -> None:
    """`model` lists the held keys by position."""
    assert len(table) == len(model)
    assert as_tuples(table.keys) == model
    where = {key: position for position, key in enumerate(model)}
    expected = [where.get(key, -1) for key in as_tuples(probes)]
    assert table.find(probes).tolist() == expected


def test_many_random_keys_against_a_set() -> None:
    rng = np.random.default_rng(7)
    table = KeyTable()
    model: list[Key] = []
    held: set[Key] = set()
    unseen = random_keys(rng, 20_000)
    while len(model) < 100_000:
        batch = random_keys(rng, int(rng.choice([1, 3, 64, 65, 500, 5_000, 20_000])))
        # A few keys sharing their low half (the index slot) with held ones: probe runs
        crowded = min(len(batch), 20)
        batch[:crowded, 1] = rng.choice(np.array([0, 1023, 1024, 2**63], np.uint64), crowded)
        batch = batch[unique_first(batch)]
        new = batch[table.find(batch) < 0]
        assert not held & set(as_tuples(new))
        positions = table.add(new)
        assert positions.tolist() == list(range(len(model), len(model) + len(new)))
        model += as_tuples(new)
        held |= set(as_tuples(new))
    assert len(held) == len(model)
    probes = np.concatenate([table.keys[rng.permutation(len(model))[:30_000]], unseen])
    check_plain(table, model, probes)
    assert table.nbytes >= 16 * len(model)


def test_growth_one_key_at_a_time_and_in_a_block() -> None:
    rng = np.random.default_rng(3)
    table = KeyTable()
    empty_bytes = table.nbytes
    keys = random_keys(rng, 3_000)
    for row in range(2_000):
        assert table.add(keys[row : row + 1]).tolist() == [row]
    assert table.add(keys[2_000:]).tolist() == list(range(2_000, 3_000))
    assert table.nbytes > empty_bytes
    check_plain(table, as_tuples(keys), np.concatenate([keys, random_keys(rng, 100)]))
    assert table.add(as_keys([])).tolist() == []
    assert len(table) == 3_000


def test_find_on_an_empty_table_and_an_empty_query() -> None:
    table = KeyTable()
    assert table.find(as_keys([(1, 2)])).tolist() == [-1]
    table.add(as_keys([(1, 2)]))
    assert table.find(as_keys([])).tolist() == []
    assert table.find(as_keys([(1, 2), (2, 1), (1, 2)])).tolist() == [0, -1, 0]


def test_keep_renumbers_in_order() -> None:
    rng = np.random.default_rng(11)
    table = KeyTable()
    keys = random_keys(rng, 5_000)
    table.add(keys)
    kept = rng.random(5_000) < 0.3
    table.keep(kept)
    model = as_tuples(keys[kept])
    check_plain(table, model, keys)
    # Positions go on from the survivors; dropped keys may come back as new ones
    back = keys[~kept][:10]
    assert table.add(back).tolist() == list(range(len(model), len(model) + 10))
    model += as_tuples(back)
    check_plain(table, model, keys)
    table.keep(np.zeros(len(model), dtype=np.bool_))
    check_plain(table, [], keys[:100])
    assert table.add(keys[:3]).tolist() == [0, 1, 2]
    check_plain(table, as_tuples(keys[:3]), keys[:100])
    table.keep(np.ones(3, dtype=np.bool_))
    check_plain(table, as_tuples(keys[:3]), keys[:100])


def test_capacity_is_checked_and_a_ring_keeps_no_chosen_keys() -> None:
    with pytest.raises(ValueError, match="capacity"):
        KeyTable(-1)
    ring = KeyTable(4)
    ring.add(as_keys([(1, 1)]))
    with pytest.raises(TypeError):
        ring.keep(np.ones(1, dtype=np.bool_))


# --- the ring -----------------------------------------------------------------------------

class RingModel:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.held: deque[Key] = deque(maxlen=capacity)

    def add(self, keys: list[Key]) -> None:
        self.held.extend(keys)


def check_ring(ring: KeyTable, model: RingModel, probes: Keys) -> None:
    assert len(ring) == len(model.held)
    held = set(model.held)
    assert len(held) == len(model.held)
    found = ring.find(probes)
    for key, position in zip(as_tuples(probes), found.tolist(), strict=True):
        if key in held:
            assert 0 <= position < len(model.held)
            assert tuple(ring.keys[position].tolist()) == key
        else:
            assert position == -1
    assert set(as_tuples(ring.keys)) == held


def add_ring(ring: KeyTable, model: RingModel, keys: Keys) -> None:
    positions = ring.add(keys).tolist()
    # Keys pushed out by later keys of the same call have no position; the rest do
    pushed = max(0, len(keys) - model.capacity)
    assert positions[:pushed] == [-1] * pushed
    assert all(0 <= p < model.capacity for p in positions[pushed:])
    assert len(set(positions[pushed:])) == len(positions) - pushed
    for key, position in zip(as_tuples(keys)[pushed:], positions[pushed:], strict=True):
        assert tuple(ring.keys[position].tolist()) == key
    model.add(as_tuples(keys))


@pytest.mark.parametrize("capacity", [1, 7, 1000])
def test_the_ring_finds_only_the_last_capacity_keys(capacity: int) -> None:
    rng = np.random.default_rng(capacity)
    ring, model = KeyTable(capacity), RingModel(capacity)
    everything = random_keys(rng, 20_000)
    everything[::50, 1] = np.uint64(1024)  # a probe run through stale entries too
    start = 0
    for size in [1, 2, 63, 64, 65, 500, capacity - 1, capacity, capacity + 1, 3 * capacity,
                 1, 1000, 4000]:
        batch = everything[start : start + max(size, 0)]
        start += len(batch)
        add_ring(ring, model, batch)
        check_ring(ring, model, everything[max(0, start - 2 * capacity - 100) : start + 50])
    # Many small batches: the index fills with stale entries and is rebuilt many times
    rebuilt, step = 0, min(37, capacity)
    while start < min(len(everything), 10_000 + 1000 * step):
        batch = everything[start : start + step]
        start += len(batch)
        entries = ring._entries
        add_ring(ring, model, batch)
        if ring._entries < entries + min(len(batch), capacity):  # re-indexed: stale ones gone
            assert entries > len(ring) and ring._entries == len(ring)
            rebuilt += 1
            check_ring(ring, model, everything[max(0, start - 2 * capacity - 100) : start])
    assert rebuilt >= 2
    check_ring(ring, model, everything[max(0, start - 2 * capacity - 100) :])


def test_a_ring_takes_back_a_key_it_pushed_out() -> None:
    ring, model = KeyTable(3), RingModel(3)
    keys = as_keys([(n, n) for n in range(6)])
    add_ring(ring, model, keys[:3])
    add_ring(ring, model, keys[3:5])  # 0 and 1 pushed out
    add_ring(ring, model, keys[:1])  # 0 again, in place of 2
    check_ring(ring, model, keys)
    assert ring.find(keys).tolist()[0] >= 0 and ring.find(keys[1:3]).tolist() == [-1, -1]


def test_a_ring_of_capacity_zero_holds_nothing() -> None:
    ring = KeyTable(0)
    keys = as_keys([(1, 2), (3, 4)])
    assert ring.add(keys).tolist() == [-1, -1]
    assert len(ring) == 0
    assert ring.find(keys).tolist() == [-1, -1]
    assert ring.add(as_keys([])).tolist() == []
    assert ring.keys.shape == (0, 2)


# --- models under hypothesis --------------------------------------------------------------

# A small pool of keys crowded into few index slots (low halves 0, 1023, 1024, 2048...), so
# that probe runs are long and wrap around the index's end.
LOWS = (0, 1, 1023, 1024, 2048, 3071)
POOL_KEYS = st.tuples(st.integers(0, 15), st.sampled_from(LOWS))
BATCH = st.lists(POOL_KEYS, max_size=120)


def distinct_new(table: KeyTable, tuples: list[Key]) -> Keys:
    keys = as_keys(tuples)
    keys = keys[unique_first(keys)]
    return keys[table.find(keys) < 0]


@settings(max_examples=60, deadline=None)
@given(capacity=st.integers(0, 60), batches=st.lists(BATCH, max_size=10))
def test_ring_against_a_model(capacity: int, batches: list[list[Key]]) -> None:
    ring, model = KeyTable(capacity), RingModel(capacity)
    pool = as_keys([(high, low) for high in range(16) for low in LOWS])
    for batch in batches:
        add_ring(ring, model, distinct_new(ring, batch))
        check_ring(ring, model, pool)


Op = tuple[str, list[Key], list[bool]]
OPS: st.SearchStrategy[list[Op]] = st.lists(st.one_of(
    st.tuples(st.just("add"), BATCH, st.just([])),
    st.tuples(st.just("keep"), st.just([]), st.lists(st.booleans(), min_size=100,
                                                      max_size=100)),
), max_size=10)


@settings(max_examples=50, deadline=None)
@given(ops=OPS)
def test_plain_table_against_a_model(ops: list[Op]) -> None:
    table = KeyTable()
    model: list[Key] = []
    pool = as_keys([(high, low) for high in range(16) for low in LOWS])
    for op, batch, mask in ops:
        if op == "add":
            new = distinct_new(table, batch)
            assert table.add(new).tolist() == list(range(len(model), len(model) + len(new)))
            model += as_tuples(new)
        else:
            kept: npt.NDArray[np.bool_] = np.array(mask[: len(model)], dtype=np.bool_)
            table.keep(kept)
            model = [key for key, keep in zip(model, kept.tolist(), strict=True) if keep]
        check_plain(table, model, pool)
