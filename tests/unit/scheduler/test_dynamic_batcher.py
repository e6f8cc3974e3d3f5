"""DynamicBatcher on the event loop, over a small in-process WorkerChannel (pure scheduling logic)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
from scheduler_helpers import model_config, request

from server.core.scheduler import create_scheduler
from server.core.scheduler.default import DefaultScheduler
from server.core.scheduler.dynamic_batcher import DynamicBatcher
from server.core.stats import ModelStats
from server.errors import ModelNotReady, QueueFull, RequestTimeout, ServerError, WorkerCrashed
from server.vocabulary.eager import EagerFuture
from server.vocabulary.types import InferenceRequest, InferenceResult, Tensor
from server.workers.channel import BatchOutcome, WorkerChannel


class EchoChannel(WorkerChannel):
    """Answers each request with OUTPUT0 = 2 * INPUT0; can be held closed to build up a queue."""

    def __init__(self, name: str = "m_0", delay: float = 0.0) -> None:
        self.instance_name = name
        self.delay = delay
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.running = 0
        self.max_running = 0
        self.crash = False
        self._alive = True

    async def submit(self, requests: list[InferenceRequest]) -> BatchOutcome:
        self.batches.append([r.id for r in requests])
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await self.gate.wait()
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.crash:
                self._alive = False
                raise WorkerCrashed("the instance process died")
            return echo(requests)
        finally:
            self.running -= 1

    @property
    def alive(self) -> bool:
        return self._alive

    async def close(self) -> None:
        self._alive = False

    def kill(self) -> None:
        self._alive = False


def echo(requests: list[InferenceRequest]) -> BatchOutcome:
    results: list[InferenceResult | ServerError] = []
    for r in requests:
        doubled = (np.frombuffer(r.inputs[0].data, np.float32) * 2).tobytes()
        output = Tensor("OUTPUT0", "FP32", list(r.inputs[0].shape), doubled)
        results.append(InferenceResult(model=r.model, version=r.version, outputs=[output], id=r.id))
    return BatchOutcome(results, compute_input_ns=1, compute_infer_ns=10, compute_output_ns=2)


class TakesAtOnce(EchoChannel):
    """A channel with the fast path: submit_now hands back the batch's (eager) future, settled by the test."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[list[InferenceRequest], EagerFuture[BatchOutcome]]] = []

    def submit_now(self, requests: list[InferenceRequest]) -> asyncio.Future[BatchOutcome] | None:
        future: EagerFuture[BatchOutcome] = EagerFuture(loop=asyncio.get_running_loop())
        self.sent.append((requests, future))
        return future


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=10))


async def started(config: Any, *channels: EchoChannel) -> tuple[DynamicBatcher, ModelStats]:
    stats = ModelStats()
    scheduler = create_scheduler(config, 1, list(channels), stats)
    assert isinstance(scheduler, DynamicBatcher)
    await scheduler.start()
    return scheduler, stats


def answer(result: InferenceResult) -> list[float]:
    return [float(x) for x in np.frombuffer(result.outputs[0].data, np.float32)]


def test_factory_picks_the_batcher_only_with_dynamic_batching() -> None:
    config = model_config()
    assert isinstance(create_scheduler(config, 1, [], ModelStats()), DynamicBatcher)
    config.ClearField("dynamic_batching")
    assert isinstance(create_scheduler(config, 1, [], ModelStats()), DefaultScheduler)


def test_concurrent_requests_share_one_execution_and_get_their_own_answers() -> None:
    async def scenario() -> None:
        channel = EchoChannel()
        batcher, stats = await started(model_config(max_batch_size=8), channel)
        results = await asyncio.gather(*(batcher.infer(request(tag=tag)) for tag in range(8)))
        assert [answer(r) for r in results] == [[2.0 * tag] * 4 for tag in range(8)]
        assert channel.batches == [[str(tag) for tag in range(8)]]
        proto = stats.to_proto("m", "1")
        assert (proto.inference_count, proto.execution_count) == (8, 1)
        assert proto.inference_stats.success.count == 8
        assert [(b.batch_size, b.compute_infer.count) for b in proto.batch_stats] == [(8, 1)]
        assert batcher.pending == 0

    run(scenario)


def test_requests_queue_while_the_instance_is_busy_then_batch() -> None:
    async def scenario() -> None:
        channel = EchoChannel()
        channel.gate.clear()
        batcher, stats = await started(model_config(max_batch_size=4), channel)
        first = asyncio.ensure_future(batcher.infer(request(tag=100)))
        await asyncio.sleep(0.01)
        rest = [asyncio.ensure_future(batcher.infer(request(tag=tag))) for tag in range(6)]
        await asyncio.sleep(0.01)
        assert batcher.pending == 7
        channel.gate.set()
        await asyncio.gather(first, *rest)
        assert [len(b) for b in channel.batches] == [1, 4, 2]
        assert stats.batch_sizes == {1: 1, 2: 1, 4: 1}
        assert stats.to_proto("m", "1").inference_stats.queue.ns > 0

    run(scenario)


def test_a_batch_the_channel_takes_at_once_is_answered_inside_its_outcome_without_a_task() -> None:
    async def scenario() -> None:
        channel = TakesAtOnce()
        batcher, stats = await started(model_config(max_batch_size=4), channel)
        tasks_before = len(asyncio.all_tasks())
        answers = [batcher.submit(request(tag=tag)) for tag in range(3)]
        await asyncio.sleep(0.01)  # the pump dispatches one batch of three
        assert [len(requests) for requests, _ in channel.sent] == [3]
        assert len(asyncio.all_tasks()) == tasks_before  # no task per batch
        requests, outcome = channel.sent[0]
        outcome.set_result(echo(requests))
        # Answered inside set_result: no loop step between the worker's answer and the requesters.
        assert [answer(done.result()) for done in answers] == [[2.0 * tag] * 4 for tag in range(3)]
        assert (stats.to_proto("m", "1").execution_count, batcher.pending) == (1, 0)
        crashed = [batcher.submit(request(tag=tag)) for tag in range(2)]
        await asyncio.sleep(0.01)
        channel.sent[1][1].set_exception(WorkerCrashed("the instance process died"))
        for done in crashed:
            with pytest.raises(WorkerCrashed):
                done.result()
        assert batcher.pending == 0

    run(scenario)


def test_instances_execute_in_parallel() -> None:
    async def scenario() -> None:
        channels = [EchoChannel("m_0", delay=0.05), EchoChannel("m_1", delay=0.05)]
        batcher, _ = await started(model_config(max_batch_size=1), *channels)
        await asyncio.gather(*(batcher.infer(request(tag=tag)) for tag in range(4)))
        assert [len(c.batches) for c in channels] == [2, 2]
        assert all(c.max_running == 1 for c in channels)

    run(scenario)


def test_batching_delay_collects_requests_arriving_later() -> None:
    async def scenario() -> None:
        channel = EchoChannel()
        config = model_config(preferred_batch_size=[4], max_queue_delay_microseconds=200_000)
        batcher, _ = await started(config, channel)
        first = asyncio.ensure_future(batcher.infer(request(tag=1)))
        await asyncio.sleep(0.02)
        assert channel.batches == []  # waiting for the preferred size
        later = [asyncio.ensure_future(batcher.infer(request(tag=t))) for t in (2, 3, 4)]
        await asyncio.gather(first, *later)
        assert channel.batches == [["1", "2", "3", "4"]]
        lone = await asyncio.wait_for(batcher.infer(request(tag=5)), timeout=2)  # delay runs out
        assert answer(lone) == [10.0] * 4

    run(scenario)


def test_queue_full_is_rejected_and_then_recovers() -> None:
    async def scenario() -> None:
        channel = EchoChannel()
        channel.gate.clear()
        config = model_config(max_batch_size=1, default_queue_policy={"max_queue_size": 1})
        batcher, stats = await started(config, channel)
        running = asyncio.ensure_future(batcher.infer(request(tag=1)))
        await asyncio.sleep(0.01)
        queued = asyncio.ensure_future(batcher.infer(request(tag=2)))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull, match="Exceeds maximum queue size"):
            await batcher.infer(request(tag=3))
        assert stats.fail_count == 0  # like Triton, a full queue is not a counted failure
        channel.gate.set()
        await asyncio.gather(running, queued)
        await batcher.infer(request(tag=4))  # recovered

    run(scenario)


def test_timeout_rejects_while_every_instance_is_busy() -> None:
    async def scenario() -> None:
        channel = EchoChannel()
        channel.gate.clear()
        config = model_config(max_batch_size=1, default_queue_policy={"default_timeout_microseconds": 30_000})
        batcher, stats = await started(config, channel)
        running = asyncio.ensure_future(batcher.infer(request(tag=1)))
        await asyncio.sleep(0.01)
        with pytest.raises(RequestTimeout, match="Request timeout expired"):
            await asyncio.wait_for(batcher.infer(request(tag=2)), timeout=2)
        assert stats.failures_by_reason["REJECTED"] == 1
        channel.gate.set()
        await running

    run(scenario)


def test_cancelled_request_leaves_the_queue() -> None:
    async def scenario() -> None:
        channel = EchoChannel()
        channel.gate.clear()
        batcher, stats = await started(model_config(max_batch_size=1), channel)
        running = asyncio.ensure_future(batcher.infer(request(tag=1)))
        await asyncio.sleep(0.01)
        doomed = asyncio.ensure_future(batcher.infer(request(tag=2)))
        await asyncio.sleep(0.01)
        assert batcher.pending == 2
        doomed.cancel()
        await asyncio.sleep(0)
        assert batcher.pending == 1
        assert stats.failures_by_reason["CANCELED"] == 1
        channel.gate.set()
        await running
        await asyncio.sleep(0.01)
        assert channel.batches == [["1"]]  # the cancelled one never ran

    run(scenario)


def test_preserve_ordering_holds_later_batches_until_earlier_ones_answer() -> None:
    async def scenario() -> None:
        slow, fast = EchoChannel("m_0", delay=0.1), EchoChannel("m_1")
        batcher, _ = await started(model_config(max_batch_size=1, preserve_ordering=True), slow, fast)
        finished: list[str] = []

        async def call(tag: int) -> None:
            result = await batcher.infer(request(tag=tag))
            finished.append(result.id)

        await asyncio.gather(call(1), call(2))
        assert finished == ["1", "2"]

    run(scenario)


def test_without_preserve_ordering_fast_answers_go_first() -> None:
    async def scenario() -> None:
        slow, fast = EchoChannel("m_0", delay=0.1), EchoChannel("m_1")
        batcher, _ = await started(model_config(max_batch_size=1), slow, fast)
        finished: list[str] = []

        async def call(tag: int) -> None:
            finished.append((await batcher.infer(request(tag=tag))).id)

        await asyncio.gather(call(1), call(2))
        assert finished == ["2", "1"]

    run(scenario)


def test_a_crash_fails_the_batch_and_the_next_live_instance_takes_over() -> None:
    async def scenario() -> None:
        broken, healthy = EchoChannel("m_0"), EchoChannel("m_1")
        broken.crash = True
        batcher, stats = await started(model_config(max_batch_size=2), broken, healthy)
        with pytest.raises(WorkerCrashed):
            await batcher.infer(request(tag=1))
        assert stats.failures_by_reason["BACKEND"] == 1
        assert answer(await batcher.infer(request(tag=2))) == [4.0] * 4
        assert batcher.channels == [healthy]

    run(scenario)


class RefusesOnceDead(EchoChannel):
    """Like a worker's channel: a batch offered after the instance died is refused, not run."""

    async def submit(self, requests: list[InferenceRequest]) -> BatchOutcome:
        if not self.alive:
            raise WorkerCrashed(f"instance '{self.instance_name}' is not running")
        return await super().submit(requests)


def test_a_queued_request_handed_an_instance_that_dies_before_it_is_sent_goes_to_a_live_one() -> None:
    async def scenario() -> None:
        dying, healthy = RefusesOnceDead("m_0"), RefusesOnceDead("m_1")
        dying.gate.clear()
        healthy.gate.clear()
        config = model_config()
        config.ClearField("dynamic_batching")
        stats = ModelStats()
        scheduler = create_scheduler(config, 1, [dying, healthy], stats)
        assert isinstance(scheduler, DefaultScheduler)
        await scheduler.start()
        first = [asyncio.ensure_future(scheduler.infer(request(tag=tag))) for tag in (1, 2)]
        await asyncio.sleep(0.01)  # one on each instance
        queued = asyncio.ensure_future(scheduler.infer(request(tag=3)))
        await asyncio.sleep(0.01)
        release = scheduler.pool.release

        def release_then_die(channel: WorkerChannel) -> None:
            release(channel)  # hands the freed slot to the queued request...
            if channel is dying:
                dying._alive = False  # ...and the instance dies before that request's next step

        scheduler.pool.release = release_then_die  # type: ignore[method-assign]
        dying.gate.set()
        await asyncio.sleep(0.01)
        healthy.gate.set()
        answers = await asyncio.gather(*first, queued)
        assert [answer(result) for result in answers] == [[2.0] * 4, [4.0] * 4, [6.0] * 4]
        assert dying.batches == [["1"]] and healthy.batches == [["2"], ["3"]]
        assert stats.failures_by_reason.get("BACKEND", 0) == 0

    run(scenario)


def test_stop_without_drain_fails_queued_requests() -> None:
    async def scenario() -> None:
        channel = EchoChannel()
        channel.gate.clear()
        batcher, _ = await started(model_config(max_batch_size=1), channel)
        running = asyncio.ensure_future(batcher.infer(request(tag=1)))
        await asyncio.sleep(0.01)
        queued = asyncio.ensure_future(batcher.infer(request(tag=2)))
        await asyncio.sleep(0.01)
        stopping = asyncio.ensure_future(batcher.stop(drain=False))
        await asyncio.sleep(0.01)
        with pytest.raises(ModelNotReady):
            await queued
        assert not stopping.done()  # the running batch still finishes
        channel.gate.set()
        await asyncio.gather(running, stopping)
        with pytest.raises(ModelNotReady):
            await batcher.infer(request(tag=3))

    run(scenario)


def test_stop_with_drain_answers_everything_queued() -> None:
    async def scenario() -> None:
        channel = EchoChannel(delay=0.01)
        batcher, _ = await started(model_config(max_batch_size=1), channel)
        calls = [asyncio.ensure_future(batcher.infer(request(tag=t))) for t in range(3)]
        await asyncio.sleep(0)
        await batcher.stop(drain=True)
        assert [answer(c.result())[0] for c in calls] == [0.0, 2.0, 4.0]

    run(scenario)
