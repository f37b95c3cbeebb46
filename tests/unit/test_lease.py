"""The close lease (metering/lease.py) on the in-memory store: one holder at a time, claims
that collide both step back, a lapsed holder's batch in flight is found and settled, and a
holder whose lease ran out stops instead of renewing."""

from __future__ import annotations

import pytest

from aggregation import MemoryStore
from metering.lease import CloseLease, LeaseBusy, LeaseLost


@pytest.fixture
def store() -> MemoryStore:
    store = MemoryStore()
    store.ensure_schema()
    return store


def test_a_second_close_waits_then_gives_up(store: MemoryStore) -> None:
    first = CloseLease(store, seconds=30)
    first.acquire(wait=0)
    second = CloseLease(store, seconds=30, sleep=lambda _seconds: None)
    heard: list[str] = []
    with pytest.raises(LeaseBusy, match=first.holder):
        second.acquire(wait=0.05, on_wait=heard.append)
    assert heard == [first.holder]
    assert not second.held and first.held
    first.release()
    second.acquire(wait=0)
    assert second.held


def test_claims_that_see_each_other_both_step_back(store: MemoryStore) -> None:
    one = CloseLease(store, seconds=30)
    other = CloseLease(store, seconds=30)
    # `other` claimed between one's claim and one's read: both see two live claims.
    store.write_lease("close", other.holder, seq=1, seconds=30)
    with pytest.raises(LeaseBusy):
        one.acquire(wait=0)
    assert [state.holder for state in store.leases("close")
            if state.remaining_seconds > 0] == [other.holder]


def test_renew_declares_the_batch_in_flight(store: MemoryStore) -> None:
    lease = CloseLease(store, seconds=30)
    lease.acquire(wait=0)
    name = lease.next_batch()
    assert name == f"{lease.holder}/1"
    (state,) = store.leases("close")
    assert state.pending == name and state.remaining_seconds >= 29
    lease.published()
    lease.release()
    (state,) = store.leases("close")
    assert state.pending == "" and state.remaining_seconds <= 0


def test_a_close_that_fails_before_publishing_leaves_its_batch_declared(
    store: MemoryStore,
) -> None:
    lease = CloseLease(store, seconds=30)
    lease.acquire(wait=0)
    name = lease.next_batch()
    lease.release()  # the publish failed: no published()
    (orphan,) = CloseLease(store, seconds=30).orphans()
    assert orphan.pending == name


def test_a_settled_holder_that_wakes_up_stops(store: MemoryStore) -> None:
    stalled = CloseLease(store, seconds=30)
    stalled.acquire(wait=0)
    stalled.next_batch()
    # What the next holder does once the stalled lease lapsed: it settles the batch.
    (state,) = store.leases("close")
    CloseLease(store, seconds=30).settle(state._replace(remaining_seconds=0))
    with pytest.raises(LeaseLost):
        stalled.check()
    stalled.release()  # no longer held: writes nothing
    (state,) = store.leases("close")
    assert state.pending == "" and state.seq > 1 << 32


def test_a_lapsed_holder_s_batch_is_an_orphan_until_settled(store: MemoryStore) -> None:
    store.write_lease("close", "killed", seq=7, seconds=0, pending="killed/3")
    store.write_lease("close", "finished", seq=2, seconds=0)
    lease = CloseLease(store, seconds=30)
    lease.acquire(wait=0)
    (orphan,) = lease.orphans()
    assert (orphan.holder, orphan.pending) == ("killed", "killed/3")
    lease.settle(orphan)
    assert lease.orphans() == []


def test_a_live_holder_s_batch_is_not_an_orphan(store: MemoryStore) -> None:
    store.write_lease("close", "busy", seq=1, seconds=30, pending="busy/1")
    assert CloseLease(store, seconds=30).orphans() == []


def test_a_holder_whose_lease_ran_out_stops(store: MemoryStore) -> None:
    lease = CloseLease(store, seconds=30)
    lease.acquire(wait=0)
    # What the store shows after a stall: our last row lapsed (or another close settled it).
    store.write_lease("close", lease.holder, seq=99, seconds=5)
    with pytest.raises(LeaseLost, match="ran out"):
        lease.next_batch()
    assert not lease.held
    with pytest.raises(LeaseLost):
        lease.renew()


def test_leases_are_at_least_three_seconds(store: MemoryStore) -> None:
    with pytest.raises(ValueError, match="at least 3"):
        CloseLease(store, seconds=2)
