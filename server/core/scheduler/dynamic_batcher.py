"""DynamicBatcher: one model version's queue, batched by rows onto whichever instance is free.

The InstancePool (pool.py) lends the instances: the least-loaded one first, and a worker's second
arena slot when every instance is busy, so batch k+1 is copied in while batch k computes.

The rules of batch forming live in batching.py (pure, unit-tested); this module runs them on the
event loop. It never sleeps on a batching delay: a "pump" runs once per loop tick after requests
arrive (so requests arriving together are batched together), whenever an instance frees up, and
from a single timer armed for the earliest of (batching delay runs out, a queue timeout expires).
Everything happens on the one asyncio thread, so no locks; statistics are plain int updates.

Each request awaits its own future. A request whose awaiting task is cancelled (client went away,
gRPC deadline) leaves the queue at once; if its batch is already running, its answer is dropped.
"""

from __future__ import annotations

import asyncio
import collections
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from server.core.scheduler.batching import TIMEOUT_MESSAGE, BatchingPolicy, QueuedRequest, RequestQueue
from server.core.scheduler.pumped import PumpedScheduler
from server.core.stats import ModelStats
from server.errors import BackendError, RequestTimeout, ServerError, WorkerCrashed
from server.vocabulary.eager import EagerFuture, on_done
from server.vocabulary.types import InferenceRequest, InferenceResult
from server.workers.channel import BatchOutcome, WorkerChannel

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2


@dataclass(eq=False, slots=True)
class _Execution:
    """A dispatched batch; with preserve_ordering its answers wait for earlier batches."""

    batch: list[QueuedRequest]
    dispatch_ns: int
    outcome: BatchOutcome | None = None


class DynamicBatcher(PumpedScheduler):
    def __init__(
        self,
        config: model_config_pb2.ModelConfig,
        version: int | str,
        channels: Sequence[WorkerChannel],
        stats: ModelStats,
        max_in_flight_per_instance: int | None = None,
    ) -> None:
        super().__init__(config.name, str(version), channels, max_in_flight_per_instance)
        self.stats = stats
        self.policy = BatchingPolicy.from_config(config)
        self._queue = RequestQueue(self.policy)
        # Queue length above which a batch may go to a busy instance. With priority levels never:
        # a batch sent early could not be overtaken by a higher-priority request arriving after it.
        self._spare_above = self.policy.max_batch_size if not self.policy.priority_levels else sys.maxsize
        self._in_order: collections.deque[_Execution] = collections.deque()  # preserve_ordering only
        self._tasks: set[asyncio.Task[None]] = set()

    # -- Scheduler ------------------------------------------------------------------------------

    async def stop(self, drain: bool = True) -> None:
        self._accepting = False
        if not drain:
            error = self.not_ready()
            now = time.monotonic_ns()
            for item in self._queue.drain():
                self._fail(item, error, now, "OTHER")
        if self._pending.count:
            self._schedule_pump()
            await self._pending.settled()
        self._stop_pumping()

    def submit(self, request: InferenceRequest) -> asyncio.Future[InferenceResult]:
        if not self._accepting:
            raise self.not_ready()
        future: asyncio.Future[InferenceResult] = EagerFuture(loop=self._loop())
        # QueueFull propagates uncounted: Triton 2.51 leaves it out of the statistics and metrics.
        item = self._queue.enqueue(request, time.monotonic_ns(), future)
        return self._queued(item, future)

    def _withdraw(self, item: QueuedRequest) -> None:
        """The requester cancelled (client gone, deadline): leave the queue if still in it."""
        if self._queue.remove(item):
            self._cancelled_in_queue(item.request)
        elif item.request.cancel_hook is not None:  # executing: the model's is_cancelled() turns true
            item.request.cancel_hook()

    # -- the pump -------------------------------------------------------------------------------

    def _pump(self) -> None:
        self._pump_handle = None
        now = time.monotonic_ns()
        for item in self._queue.expire(now):
            self._fail(item, RequestTimeout(TIMEOUT_MESSAGE), now, "REJECTED")
        wait_ns: int | None = None
        pool, queue, spare_above = self.pool, self._queue, self._spare_above
        while len(queue):
            # A busy instance's spare slot only for a batch that cannot grow with more behind it
            # (more requests queued than one batch holds): it is then copied in while the instance
            # computes; a smaller batch waits for an idle instance, and keeps gathering requests.
            channel = pool.acquire_nowait(spare=len(queue) > spare_above)
            if channel is None:
                break
            decision = self._queue.form_batch(now)
            if not decision.batch:
                pool.return_unused(channel)
                wait_ns = decision.wait_ns
                break
            self._dispatch(channel, decision.batch, now)
        if not pool.serving_count and len(self._queue):
            crashed = WorkerCrashed(f"no live instance of '{self.model_name}' version {self.version}")
            for item in self._queue.drain():
                self._fail(item, crashed, now, "OTHER")
        wake_ns = now + wait_ns if wait_ns is not None else 0
        deadline_ns = self._queue.next_deadline_ns()
        if deadline_ns and (not wake_ns or deadline_ns < wake_ns):
            wake_ns = deadline_ns + 1000  # expire() rejects strictly after the deadline
        self._arm_timer(wake_ns, now)

    # -- execution ------------------------------------------------------------------------------

    def _dispatch(self, channel: WorkerChannel, batch: list[QueuedRequest], now: int) -> None:
        execution = _Execution(batch, now)
        if self.policy.preserve_ordering:
            self._in_order.append(execution)
        requests = [item.request for item in batch]
        try:
            sent = channel.submit_now(requests)
        except Exception as error:
            self._executed(channel, execution, None, error)
            return
        if sent is None:  # the channel cannot take it at once: a task waits for it
            task = self._loop().create_task(self._execute(channel, execution, requests))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        # No task: the outcome is delivered inside the callback that reads it (eager.py).
        on_done(sent, lambda done: self._executed(channel, execution, *_outcome_of(done)))

    async def _execute(
        self, channel: WorkerChannel, execution: _Execution, requests: list[InferenceRequest]
    ) -> None:
        try:
            outcome = await channel.submit(requests)
        except asyncio.CancelledError:
            self.pool.release(channel)
            raise
        except Exception as error:
            self._executed(channel, execution, None, error)
            return
        self._executed(channel, execution, outcome, None)

    def _executed(
        self,
        channel: WorkerChannel,
        execution: _Execution,
        outcome: BatchOutcome | None,
        error: Exception | None,
    ) -> None:
        batch = execution.batch
        if isinstance(error, ServerError):
            outcome = BatchOutcome(results=[error] * len(batch))
        elif error is not None or outcome is None:  # a bug below the seam must not strand the clients
            outcome = BatchOutcome(results=[BackendError(f"instance failed: {error}")] * len(batch))
        else:
            # Triton 2.51's inference_count grows by the rows of the requests that succeeded only.
            self.stats.record_execution(
                batch_size=sum(item.rows for item in batch),
                compute_input_ns=outcome.compute_input_ns,
                compute_infer_ns=outcome.compute_infer_ns,
                compute_output_ns=outcome.compute_output_ns,
                inferences=sum(
                    item.rows
                    for item, result in zip(batch, outcome.results, strict=False)
                    if not (isinstance(result, ServerError) and not result.model_response)
                ),
            )
        self.pool.release(channel)  # wakes the pump (on_available)
        execution.outcome = outcome
        if not self.policy.preserve_ordering:
            self._deliver(execution)
            return
        while self._in_order and self._in_order[0].outcome is not None:
            self._deliver(self._in_order.popleft())

    def _deliver(self, execution: _Execution) -> None:
        assert execution.outcome is not None
        self._deliver_rows(execution.batch, execution.outcome, execution.dispatch_ns)

    def _fail(self, item: QueuedRequest, error: ServerError, now: int, reason: str) -> None:
        self.stats.record_failure(request_ns=now - item.request.arrival_ns, reason=reason)
        future: asyncio.Future[InferenceResult] = item.waiter
        if not future.done():
            future.set_exception(error)
        self._pending.done()


def _outcome_of(done: asyncio.Future[BatchOutcome]) -> tuple[BatchOutcome | None, Exception | None]:
    if done.cancelled():
        return None, BackendError("its execution was cancelled")
    error = done.exception()
    if error is None:
        return done.result(), None
    return None, error if isinstance(error, Exception) else BackendError(repr(error))
