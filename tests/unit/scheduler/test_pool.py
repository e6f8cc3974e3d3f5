"""InstancePool: least-loaded lending with per-instance slots, waiters, affinity, crashes, replacement."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from scheduler_helpers import model_config, request

from server.core.scheduler.dynamic_batcher import DynamicBatcher
from server.core.scheduler.pool import InstancePool
from server.core.stats import ModelStats
from server.errors import ModelNotReady, ServerError, WorkerCrashed
from server.vocabulary.types import InferenceRequest, InferenceResult
from server.workers.channel import BatchOutcome, WorkerChannel


class Slots(WorkerChannel):
    """An instance that takes `max_in_flight` batches at once; each batch waits for `gate`."""

    def __init__(self, name: str, max_in_flight: int = 2) -> None:
        self.instance_name = name
        self.max_in_flight = max_in_flight
        self.gate = asyncio.Event()
        self.running = 0
        self.max_running = 0
        self.batches: list[list[str]] = []
        self.submitted = asyncio.Event()  # set at each submit (cleared by the test)
        self._alive = True

    async def submit(self, requests: list[InferenceRequest]) -> BatchOutcome:
        self.batches.append([r.id for r in requests])
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        self.submitted.set()
        try:
            await self.gate.wait()
            results: list[InferenceResult | ServerError] = [
                InferenceResult(r.model, r.version, r.inputs, r.id) for r in requests
            ]
            return BatchOutcome(results)
        finally:
            self.running -= 1

    @property
    def alive(self) -> bool:
        return self._alive

    async def close(self) -> None:
        self._alive = False

    def kill(self) -> None:
        self._alive = False


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=10))


def names(channels: list[WorkerChannel | None]) -> list[str | None]:
    return [None if c is None else c.instance_name for c in channels]


def test_an_idle_instance_goes_first_then_second_slots_in_rotation() -> None:
    a, b = Slots("a"), Slots("b")
    pool = InstancePool("m", 1, [a, b])
    assert names([pool.acquire_nowait() for _ in range(5)]) == ["a", "b", "a", "b", None]
    pool.release(b)
    pool.release(b)
    # a holds two batches, b none: b is the least loaded, twice, before anything else
    assert names([pool.acquire_nowait(), pool.acquire_nowait(), pool.acquire_nowait()]) == ["b", "b", None]
    assert pool.lent == 4 and pool.in_flight(0) == 2 and pool.in_flight(1) == 2


def test_a_spare_slot_only_when_asked_for() -> None:
    a = Slots("a")
    pool = InstancePool("m", 1, [a])
    assert pool.acquire_nowait(spare=False) is a
    assert pool.acquire_nowait(spare=False) is None, "busy: without a backlog, wait for it to be idle"
    assert pool.acquire_nowait(spare=True) is a


def test_waiters_take_a_spare_slot_only_with_a_backlog_behind_them() -> None:
    async def scenario() -> None:
        a = Slots("a")
        pool = InstancePool("m", 1, [a])
        assert await pool.acquire() is a
        lone = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0)
        assert not lone.done(), "one waiter stays queued (still withdrawable) while the instance is busy"
        behind = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0)
        assert await lone is a and pool.in_flight(0) == 2, "a backlog: the oldest takes the spare slot"
        assert not behind.done()
        pool.release(a)  # one batch still runs and nobody waits behind `behind`: it keeps waiting
        await asyncio.sleep(0)
        assert not behind.done() and pool.in_flight(0) == 1
        pool.release(a)  # idle now
        assert await behind is a

    run(scenario)


def test_a_waiter_handed_a_slot_of_an_instance_that_then_dies_waits_for_a_live_one() -> None:
    async def scenario() -> None:
        a, b = Slots("a", max_in_flight=1), Slots("b", max_in_flight=1)
        pool = InstancePool("m", 1, [a, b])
        assert {await pool.acquire(), await pool.acquire()} == {a, b}
        waiting = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0)
        pool.release(a)  # handed to the waiter...
        a.kill()  # ...and dead before the waiter's next step
        await asyncio.sleep(0)
        assert not waiting.done()
        pool.release(b)
        assert await waiting is b
        assert pool.acquire_nowait() is None  # a left the rotation

    run(scenario)


def test_an_instance_of_one_slot_takes_one_batch_at_a_time() -> None:
    pool = InstancePool("m", 1, [Slots("a", max_in_flight=1)])
    assert names([pool.acquire_nowait(), pool.acquire_nowait()]) == ["a", None]
    capped = InstancePool("m", 1, [Slots("a", max_in_flight=2)], max_in_flight_per_instance=1)
    assert names([capped.acquire_nowait(), capped.acquire_nowait()]) == ["a", None]


def test_waiters_are_served_oldest_first_as_slots_come_back() -> None:
    async def scenario() -> None:
        a = Slots("a", max_in_flight=1)
        pool = InstancePool("m", 1, [a])
        assert await pool.acquire() is a
        first = asyncio.ensure_future(pool.acquire())
        second = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0)
        assert pool.acquire_nowait() is None
        pool.release(a)
        assert await first is a and not second.done()
        pool.release(a)
        assert await second is a
        pool.release(a)
        assert pool.lent == 0

    run(scenario)


def test_affinity_waits_for_its_instance_and_keeps_arrival_order() -> None:
    async def scenario() -> None:
        a, b = Slots("a", max_in_flight=1), Slots("b", max_in_flight=1)
        pool = InstancePool("m", 1, [a, b])
        assert await pool.acquire(1) is b
        pinned = asyncio.ensure_future(pool.acquire(1))
        await asyncio.sleep(0)
        assert not pinned.done(), "instance 1 is busy: a pinned batch does not go to instance 0"
        assert await pool.acquire() is a  # the others still go where there is room
        anyone = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0)
        pool.release(b)  # the pinned waiter came first
        assert await pinned is b and not anyone.done()
        pool.release(a)
        assert await anyone is a
        assert pool.index_of(b) == 1
        with pytest.raises(ValueError, match="no instance 2"):
            await pool.acquire(2)

    run(scenario)


def test_a_cancelled_waiter_gives_back_a_slot_handed_to_it() -> None:
    async def scenario() -> None:
        a = Slots("a", max_in_flight=1)
        pool = InstancePool("m", 1, [a])
        await pool.acquire()
        waiter = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0)
        pool.release(a)  # handed to the waiter ...
        waiter.cancel()  # ... which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert pool.lent == 0 and pool.acquire_nowait() is a

    run(scenario)


def test_a_reserved_slot_is_a_future_and_a_withdrawn_one_leaves_the_queue() -> None:
    async def scenario() -> None:
        a = Slots("a", max_in_flight=1)
        pool = InstancePool("m", 1, [a])
        free = pool.reserve()
        assert free.done() and free.result() is a  # free: lent at once
        withdrawn, waiting = pool.reserve(), pool.reserve()
        assert not withdrawn.done() and pool.try_acquire() is None
        withdrawn.cancel()
        await asyncio.sleep(0)  # its callback took it out of the queue
        pool.release(a)
        assert waiting.done() and waiting.result() is a  # the slot skipped the withdrawn one
        pool.release(a)
        assert pool.lent == 0 and pool.try_acquire() is a
        # With a spare slot: a withdrawn waiter is no backlog, so the next one is not lent it.
        b = Slots("b", max_in_flight=2)
        spare = InstancePool("m", 1, [b])
        assert spare.try_acquire() is b
        withdrawn = spare.reserve()
        withdrawn.cancel()
        await asyncio.sleep(0)
        assert not spare.reserve().done()

    run(scenario)


def test_dead_instances_leave_and_come_back_with_their_index() -> None:
    async def scenario() -> None:
        a, b = Slots("a", max_in_flight=1), Slots("b", max_in_flight=1)
        pool = InstancePool("m", 1, [a, b])
        a.kill()
        assert pool.acquire_nowait() is b
        assert pool.channels == [b] and pool.has_live_instance
        waiter = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0)
        b.kill()
        pool.release(b)  # the last live instance is gone: waiters fail
        with pytest.raises(WorkerCrashed, match="no live instance of 'm' version 1"):
            await waiter
        with pytest.raises(WorkerCrashed, match="no live instance"):
            await pool.acquire()
        assert not pool.has_live_instance and pool.serving_count == 0
        a._alive = True  # its supervisor restarted it
        pool.add(a)
        assert pool.index_of(a) == 0 and await pool.acquire(0) is a
        pool.add(a)  # already serving: nothing changes
        assert pool.serving_count == 1 and pool.in_flight(0) == 1

    run(scenario)


def test_remove_takes_an_instance_out_and_fails_its_pinned_waiters() -> None:
    async def scenario() -> None:
        a, b = Slots("a", max_in_flight=1), Slots("b", max_in_flight=1)
        pool = InstancePool("m", 1, [a, b])
        await pool.acquire(0)
        pinned = asyncio.ensure_future(pool.acquire(0))
        await asyncio.sleep(0)
        pool.remove(a)
        with pytest.raises(WorkerCrashed, match="instance 0 of 'm' version 1 is not running"):
            await pinned
        pool.release(a)  # its batch came back: counted, not lent again
        assert pool.lent == 0 and pool.channels == [b]
        assert names([pool.acquire_nowait(), pool.acquire_nowait()]) == ["b", None]

    run(scenario)


def test_replace_gives_the_index_to_the_new_channel_and_drain_waits_for_the_old_batch() -> None:
    async def scenario() -> None:
        old, new = Slots("old", max_in_flight=1), Slots("new", max_in_flight=2)
        pool = InstancePool("m", 1, [old])
        assert await pool.acquire() is old
        waiter = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0)
        pool.replace(old, new)
        assert await waiter is new, "a waiter gets the new channel at once"
        assert pool.channels == [new] and pool.index_of(new) == 0 and pool.in_flight(0) == 1
        draining = asyncio.ensure_future(pool.drain())
        pool.release(new)
        await asyncio.sleep(0)
        assert not draining.done(), "the old channel's batch is still out"
        pool.release(old)
        await draining
        assert pool.lent == 0 and pool.in_flight(0) == 0
        with pytest.raises(ValueError, match="not an instance"):
            pool.index_of(old)

    run(scenario)


def test_fail_waiters_ends_every_waiting_acquire() -> None:
    async def scenario() -> None:
        a = Slots("a", max_in_flight=1)
        pool = InstancePool("m", 1, [a])
        await pool.acquire()
        waiters = [asyncio.ensure_future(pool.acquire()), asyncio.ensure_future(pool.acquire(0))]
        await asyncio.sleep(0)
        pool.fail_waiters(ModelNotReady("stopping"))
        for waiter in waiters:
            with pytest.raises(ModelNotReady):
                await waiter

    run(scenario)


async def settle() -> None:
    """Let the batcher's pump (scheduled with call_soon) and the tasks it starts run."""
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.mark.parametrize("slots", [1, 2])
def test_the_batcher_puts_a_full_batch_with_a_backlog_on_a_busy_instance(slots: int) -> None:
    async def scenario() -> None:
        channel = Slots("m_0", max_in_flight=slots)
        batcher = DynamicBatcher(model_config(max_batch_size=2), 1, [channel], ModelStats())
        await batcher.start()
        calls = [batcher.submit(request(tag=1))]
        await channel.submitted.wait()
        channel.submitted.clear()
        calls += [batcher.submit(request(tag=tag)) for tag in (2, 3)]
        await settle()
        assert channel.running == 1, "a batch that could still grow waits for the idle instance"
        calls.append(batcher.submit(request(tag=4)))
        if slots == 2:
            await channel.submitted.wait()  # 3 queued > 2 rows: a full batch goes in at once
        else:
            await settle()
        assert channel.running == slots and batcher.pool.in_flight(0) == slots
        channel.gate.set()
        assert [(await call).id for call in calls] == ["1", "2", "3", "4"]
        expected = [["1"], ["2", "3"], ["4"]]
        assert channel.batches == expected and channel.max_running == slots
        await batcher.stop()

    run(scenario)
