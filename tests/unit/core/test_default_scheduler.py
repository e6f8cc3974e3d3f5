"""DefaultScheduler with in-process instances: rotation, queueing, failures, cancellation, drain."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from server.core.scheduler.default import DefaultScheduler
from server.core.stats import ModelStats
from server.errors import BackendError, ModelNotReady, ServerError, WorkerCrashed
from server.vocabulary.types import InferenceRequest, InferenceResult, Tensor
from server.workers.channel import BatchOutcome, WorkerChannel


class LocalInstance(WorkerChannel):
    """Answers with its own name after `gate` opens (or at once); records what it ran."""

    def __init__(self, name: str, fail_with: ServerError | None = None) -> None:
        self.instance_name = name
        self.executed: list[str] = []
        self.gate: asyncio.Event | None = None
        self.fail_with = fail_with
        self.busy = 0
        self.max_busy = 0
        self._alive = True

    async def submit(self, requests: list[InferenceRequest]) -> BatchOutcome:
        assert len(requests) == 1, "DefaultScheduler sends one request per execution"
        self.busy += 1
        self.max_busy = max(self.max_busy, self.busy)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if not self._alive:
                raise WorkerCrashed(f"{self.instance_name} died")
            self.executed.append(requests[0].id)
            result: InferenceResult | ServerError = self.fail_with or InferenceResult(
                "m", "1", [Tensor("OUT", "BYTES", [1], self.instance_name.encode())], id=requests[0].id
            )
            return BatchOutcome([result], compute_input_ns=1, compute_infer_ns=2, compute_output_ns=3)
        finally:
            self.busy -= 1

    @property
    def alive(self) -> bool:
        return self._alive

    def die(self) -> None:
        self._alive = False

    async def close(self) -> None:
        self._alive = False

    def kill(self) -> None:
        self._alive = False


def in_loop(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test body in a fresh event loop (the project does not use pytest-asyncio)."""

    @functools.wraps(test)
    def wrapper() -> None:
        asyncio.run(asyncio.wait_for(test(), timeout=10))

    return wrapper


def make_request(request_id: str) -> InferenceRequest:
    return InferenceRequest("m", "1", [Tensor("IN", "FP32", [1], b"\0" * 4)], id=request_id)


async def started(instances: list[LocalInstance], stats: ModelStats | None = None) -> DefaultScheduler:
    scheduler = DefaultScheduler("m", 1, list(instances), stats or ModelStats(), max_batch_size=0)
    await scheduler.start()
    return scheduler


@in_loop
async def test_requests_rotate_over_free_instances() -> None:
    instances = [LocalInstance("a"), LocalInstance("b")]
    scheduler = await started(instances)
    for index in range(4):
        await scheduler.infer(make_request(f"r{index}"))
    assert instances[0].executed == ["r0", "r2"]
    assert instances[1].executed == ["r1", "r3"]


@in_loop
async def test_one_request_per_instance_and_the_rest_queue_in_order() -> None:
    instances = [LocalInstance("a"), LocalInstance("b")]
    gate = asyncio.Event()
    for instance in instances:
        instance.gate = gate
    scheduler = await started(instances)
    tasks = [asyncio.create_task(scheduler.infer(make_request(f"r{i}"))) for i in range(6)]
    await asyncio.sleep(0.01)
    assert scheduler.pending == 6
    assert sum(instance.busy for instance in instances) == 2
    gate.set()
    results = await asyncio.gather(*tasks)
    assert [result.id for result in results] == [f"r{i}" for i in range(6)]
    assert all(instance.max_busy == 1 for instance in instances)
    assert scheduler.pending == 0


@in_loop
async def test_success_is_recorded_in_the_statistics() -> None:
    stats = ModelStats()
    scheduler = await started([LocalInstance("a")], stats)
    await scheduler.infer(make_request("r"))
    proto = stats.to_proto("m", "1")
    assert proto.inference_stats.success.count == 1
    assert proto.execution_count == 1 and proto.inference_count == 1
    assert proto.inference_stats.compute_infer.ns == 2


@in_loop
async def test_model_error_is_raised_and_counted_as_a_failure() -> None:
    stats = ModelStats()
    scheduler = await started([LocalInstance("a", fail_with=BackendError("boom"))], stats)
    with pytest.raises(BackendError, match="boom"):
        await scheduler.infer(make_request("r"))
    assert stats.fail_count == 1 and stats.failures_by_reason["BACKEND"] == 1
    assert scheduler.pending == 0


@in_loop
async def test_a_dead_instance_leaves_the_rotation() -> None:
    dead, live = LocalInstance("dead"), LocalInstance("live")
    dead.die()
    scheduler = await started([dead, live])
    for index in range(3):
        await scheduler.infer(make_request(f"r{index}"))
    assert live.executed == ["r0", "r1", "r2"]
    assert scheduler.channels == [live]
    live.die()
    with pytest.raises(WorkerCrashed, match="no live instance"):
        await scheduler.infer(make_request("late"))
    restarted = LocalInstance("restarted")
    scheduler.pool.add(restarted)
    assert (await scheduler.infer(make_request("back"))).id == "back"


@in_loop
async def test_a_cancelled_waiter_does_not_lose_the_instance() -> None:
    instance = LocalInstance("a")
    instance.gate = asyncio.Event()
    scheduler = await started([instance])
    first = asyncio.create_task(scheduler.infer(make_request("first")))
    waiting = asyncio.create_task(scheduler.infer(make_request("cancelled")))
    await asyncio.sleep(0.01)
    waiting.cancel()
    instance.gate.set()
    await first
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert (await scheduler.infer(make_request("after"))).id == "after"
    assert instance.executed == ["first", "after"]


@in_loop
async def test_queued_requests_wait_as_futures_not_tasks_and_go_out_in_order() -> None:
    instance = LocalInstance("a")
    instance.gate = asyncio.Event()
    stats = ModelStats()
    scheduler = await started([instance], stats)
    tasks_before = len(asyncio.all_tasks())
    answers = [scheduler.submit(make_request(f"r{n}")) for n in range(4)]
    await asyncio.sleep(0.01)
    # One task runs the stand-in instance's submit; the three queued requests are only futures.
    assert len(asyncio.all_tasks()) == tasks_before + 1
    answers[2].cancel()  # withdrawn while queued: never executed, counted as cancelled
    instance.gate.set()
    assert [(await answer).id for answer in (answers[0], answers[1], answers[3])] == ["r0", "r1", "r3"]
    assert instance.executed == ["r0", "r1", "r3"]
    assert stats.failures_by_reason["CANCELED"] == 1 and stats.success_count == 3
    await asyncio.wait_for(scheduler.stop(drain=True), 1)  # nothing left counted pending


@in_loop
async def test_queued_requests_fail_when_the_last_instance_dies() -> None:
    instance = LocalInstance("a")
    instance.gate = asyncio.Event()
    scheduler = await started([instance])
    running = scheduler.submit(make_request("running"))
    queued = scheduler.submit(make_request("queued"))
    await asyncio.sleep(0.01)
    instance.die()
    instance.gate.set()
    with pytest.raises(WorkerCrashed):
        await running
    with pytest.raises(WorkerCrashed):
        await queued
    assert instance.executed == []


@in_loop
async def test_stop_with_drain_waits_for_in_flight_requests() -> None:
    instance = LocalInstance("a")
    instance.gate = asyncio.Event()
    scheduler = await started([instance])
    in_flight = asyncio.create_task(scheduler.infer(make_request("r")))
    await asyncio.sleep(0.01)
    stopping = asyncio.create_task(scheduler.stop(drain=True))
    await asyncio.sleep(0.01)
    assert not stopping.done()
    with pytest.raises(ModelNotReady):
        await scheduler.infer(make_request("refused"))
    instance.gate.set()
    await stopping
    assert (await in_flight).id == "r"


@in_loop
async def test_stop_without_drain_fails_the_queued_requests() -> None:
    instance = LocalInstance("a")
    instance.gate = asyncio.Event()
    scheduler = await started([instance])
    running = asyncio.create_task(scheduler.infer(make_request("running")))
    queued = asyncio.create_task(scheduler.infer(make_request("queued")))
    await asyncio.sleep(0.01)
    stopping = asyncio.create_task(scheduler.stop(drain=False))
    await asyncio.sleep(0.01)
    with pytest.raises(ModelNotReady):
        await queued
    instance.gate.set()
    await stopping
    assert (await running).id == "running"
