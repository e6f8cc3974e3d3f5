"""DefaultScheduler: one request per execution, on the least-loaded instance of the model version.

Used when the config has no `dynamic_batching`. The InstancePool (pool.py) lends the instances:
consecutive requests rotate over idle ones, a worker takes a second request into its second arena
slot while it executes the first; when every slot is taken, requests wait in arrival order and
each finished execution hands its slot straight to the oldest waiter.
"""

from __future__ import annotations

import asyncio
import time
import weakref

from server.core.scheduler.base import PooledScheduler
from server.core.stats import ModelStats
from server.errors import BackendError, ServerError, WorkerCrashed
from server.vocabulary.eager import EagerFuture, on_done
from server.vocabulary.types import InferenceRequest, InferenceResult
from server.workers.channel import BatchOutcome, WorkerChannel


class DefaultScheduler(PooledScheduler):
    def __init__(
        self,
        model_name: str,
        version: int,
        channels: list[WorkerChannel],
        stats: ModelStats,
        *,
        max_batch_size: int = 0,
        max_in_flight_per_instance: int | None = None,
    ) -> None:
        super().__init__(model_name, version, channels, max_in_flight_per_instance)
        self.stats = stats
        self.max_batch_size = max_batch_size

    async def stop(self, drain: bool = True) -> None:
        self._accepting = False
        if not drain:
            self.pool.fail_waiters(self.not_ready())
        await self._pending.settled()

    async def infer(self, request: InferenceRequest) -> InferenceResult:
        return await self.submit(request)

    def _finish(
        self, request: InferenceRequest, outcome: BatchOutcome, queued_at: int, started_at: int
    ) -> InferenceResult:
        """Count an executed request and give its result (or raise its error)."""
        result = outcome.results[0] if outcome.results else BackendError("the instance returned no result")
        finished_at = time.monotonic_ns()
        # As Triton 2.51 counts: an execution whose execute() raised is an execution and a
        # failed request; an error response the model returned is a successful request.
        failed = isinstance(result, ServerError) and not result.model_response
        self.stats.record_execution(
            batch_size=request.batch_rows(self.max_batch_size),
            compute_input_ns=outcome.compute_input_ns,
            compute_infer_ns=outcome.compute_infer_ns,
            compute_output_ns=outcome.compute_output_ns,
            inferences=0 if failed else None,
        )
        if failed and isinstance(result, ServerError):
            self.stats.record_failure(request_ns=finished_at - request.arrival_ns, reason="BACKEND")
            raise result
        self.stats.record_success(
            request_ns=finished_at - request.arrival_ns,
            queue_ns=started_at - queued_at,
            compute_input_ns=outcome.compute_input_ns,
            compute_infer_ns=outcome.compute_infer_ns,
            compute_output_ns=outcome.compute_output_ns,
        )
        if isinstance(result, ServerError):
            raise result
        if request.timings is not None:  # an ensemble step: the ensemble reports the sums
            request.timings.add(outcome.compute_input_ns, outcome.compute_infer_ns, outcome.compute_output_ns)
        return result

    def submit(self, request: InferenceRequest) -> asyncio.Future[InferenceResult]:
        """`infer` without a task or coroutine: a request waits for its slot as a future in the
        pool's queue, goes out in the step that frees the slot (in the caller's own step when an
        instance is idle), and its answer is counted in the callback that receives it. Under a
        backlog (c=8 on one instance) that is three loop steps and a task fewer per request."""
        if not self._accepting:
            raise self.not_ready()
        queued_at = time.monotonic_ns()
        channel = self.pool.try_acquire()
        slot: asyncio.Future[WorkerChannel] | None = None
        if channel is None:
            try:
                slot = self.pool.reserve()
            except WorkerCrashed:
                self._count_failure(request, "BACKEND")
                raise
        pending = self._pending
        pending.count += 1
        answer: asyncio.Future[InferenceResult] = EagerFuture(loop=asyncio.get_running_loop())
        sent: asyncio.Future[BatchOutcome] | None = None
        taken: WorkerChannel | None = None  # the slot the request went out on
        abandoned = False

        def dispatch(channel: WorkerChannel) -> None:
            nonlocal sent, taken
            taken = channel
            started_at = time.monotonic_ns()
            try:
                sent = channel.submit_now([request]) or asyncio.ensure_future(channel.submit([request]))
            except Exception as error:
                self.pool.release(channel)
                if isinstance(error, WorkerCrashed):
                    self._count_failure(request, "BACKEND")
                answer.set_exception(error)
                pending.done()
                return
            except BaseException:
                self.pool.release(channel)
                raise
            on_done(sent, lambda done: executed(channel, done, started_at))

        def executed(channel: WorkerChannel, done: asyncio.Future[BatchOutcome], started_at: int) -> None:
            if abandoned:  # _abandon released the slot and the pending count
                return
            self.pool.release(channel)
            try:
                if answer.done():  # withdrawn after the answer came, before it was read
                    if not done.cancelled():
                        done.exception()  # retrieved
                    self._count_failure(request, "CANCELED")
                elif done.cancelled():
                    answer.cancel()
                elif (error := done.exception()) is not None:
                    if isinstance(error, WorkerCrashed):
                        self._count_failure(request, "BACKEND")
                    answer.set_exception(error)
                else:
                    answer.set_result(self._finish(request, done.result(), queued_at, started_at))
            except ServerError as error:  # the model's own error, counted by _finish
                answer.set_exception(error)
            finally:
                pending.done()

        def slot_given(given: asyncio.Future[WorkerChannel]) -> None:
            nonlocal slot
            if answer.done():  # withdrawn meanwhile: `withdrawn` gives the slot back
                return
            error = given.exception()
            if error is None and not self.pool.usable(channel := given.result()):
                try:
                    slot = self.pool.reserve()
                except WorkerCrashed as crashed:  # no live instance is left
                    error = crashed
                else:
                    again = slot_given_later()
                    assert again is not None  # it is running
                    slot.add_done_callback(again)
                    return
            if error is not None:
                if isinstance(error, WorkerCrashed):
                    self._count_failure(request, "BACKEND")
                answer.set_exception(error)
                pending.done()
                return
            dispatch(channel)

        # Weak: the callback naming itself would make every queued request a reference cycle.
        slot_given_later = weakref.ref(slot_given)

        def withdrawn(future: asyncio.Future[InferenceResult]) -> None:
            nonlocal abandoned
            if not future.cancelled():
                return
            if sent is None:  # still waiting for a slot, or handed one not used yet
                assert slot is not None
                if not slot.done():
                    slot.cancel()  # leaves the pool's queue
                elif not slot.cancelled() and slot.exception() is None:
                    self.pool.release(slot.result())
                self._count_failure(request, "CANCELED")
                pending.done()
            elif not sent.done():  # the client went away mid-execution
                abandoned = True
                assert taken is not None
                self._abandon(taken, sent, request)
                self._count_failure(request, "CANCELED")
                pending.done()

        if slot is None:
            assert channel is not None
            dispatch(channel)
        else:
            slot.add_done_callback(slot_given)
        answer.add_done_callback(withdrawn)
        return answer

    def _count_failure(self, request: InferenceRequest, reason: str) -> None:
        self.stats.record_failure(request_ns=time.monotonic_ns() - request.arrival_ns, reason=reason)

    def _abandon(
        self, channel: WorkerChannel, submit: asyncio.Future[BatchOutcome], request: InferenceRequest
    ) -> None:
        """Keep `channel`'s slot lent until the execution nobody awaits any more is done."""
        self._pending.add()
        hook = request.cancel_hook  # the model's request.is_cancelled() turns true
        if hook is not None:
            hook()

        def finished(task: asyncio.Future[BatchOutcome]) -> None:
            if not task.cancelled():
                task.exception()  # retrieved: the requester is gone, a crash is reported elsewhere
            self.pool.release(channel)
            self._pending.done()

        submit.add_done_callback(finished)
