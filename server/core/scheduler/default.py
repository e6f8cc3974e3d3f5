"""DefaultScheduler: one request per execution, on the next free instance of the model version.

Used when the config has no `dynamic_batching`. Free instances wait in a FIFO, so consecutive
requests rotate over the instances; when all are busy, requests wait in arrival order and each
finished execution hands its instance straight to the oldest waiter.
"""

from __future__ import annotations

import asyncio
import collections
import time

from server.core.scheduler.base import Scheduler
from server.core.stats import ModelStats
from server.core.types import InferenceRequest, InferenceResult
from server.errors import BackendError, ModelNotReady, ServerError, WorkerCrashed
from server.workers.channel import BatchOutcome, WorkerChannel


class DefaultScheduler(Scheduler):
    def __init__(
        self,
        model_name: str,
        version: int,
        channels: list[WorkerChannel],
        stats: ModelStats,
        max_batch_size: int = 0,
    ) -> None:
        self.model_name = model_name
        self.version = version
        self.stats = stats
        self.max_batch_size = max_batch_size
        self._channels = list(channels)
        self._idle: collections.deque[WorkerChannel] = collections.deque(channels)
        self._waiters: collections.deque[asyncio.Future[WorkerChannel]] = collections.deque()
        self._pending = 0
        self._accepting = False
        self._drained: asyncio.Event | None = None

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def channels(self) -> list[WorkerChannel]:
        return list(self._channels)

    async def start(self) -> None:
        self._accepting = True

    async def stop(self, drain: bool = True) -> None:
        self._accepting = False
        if not drain:
            self._fail_waiters()
        if self._pending:
            self._drained = asyncio.Event()
            await self._drained.wait()

    async def infer(self, request: InferenceRequest) -> InferenceResult:
        if not self._accepting:
            raise ModelNotReady(f"'{self.model_name}' version {self.version} is not at ready state")
        self._pending += 1
        queued_at = time.monotonic_ns()
        try:
            channel = await self._acquire()
            started_at = time.monotonic_ns()
            # Shielded: a cancelled request (client gone) cannot stop the instance mid-execution,
            # so the instance stays busy, and counted pending for drains, until it has finished.
            submit = asyncio.ensure_future(channel.submit([request]))
            try:
                outcome = await asyncio.shield(submit)
            except asyncio.CancelledError:
                self._abandon(channel, submit)
                raise
            except BaseException:
                self._release(channel)
                raise
            self._release(channel)
            result = (
                outcome.results[0] if outcome.results else BackendError("the instance returned no result")
            )
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
                request.timings.add(
                    outcome.compute_input_ns, outcome.compute_infer_ns, outcome.compute_output_ns
                )
            return result
        except WorkerCrashed:
            self.stats.record_failure(request_ns=time.monotonic_ns() - request.arrival_ns, reason="BACKEND")
            raise
        except asyncio.CancelledError:
            self.stats.record_failure(request_ns=time.monotonic_ns() - request.arrival_ns, reason="CANCELED")
            raise
        finally:
            self._pending -= 1
            if self._pending == 0 and self._drained is not None:
                self._drained.set()

    async def _acquire(self) -> WorkerChannel:
        while self._idle:
            channel = self._idle.popleft()
            if channel.alive:
                return channel
            # A dead instance leaves the rotation; the supervisor brings a new one via add_channel.
            self._channels.remove(channel)
        if not self._channels:
            raise WorkerCrashed(f"no live instance of '{self.model_name}' version {self.version}")
        waiter: asyncio.Future[WorkerChannel] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release(waiter.result())  # handed over just as we were cancelled
            else:
                self._waiters.remove(waiter)
            raise

    def _abandon(self, channel: WorkerChannel, submit: asyncio.Future[BatchOutcome]) -> None:
        """Keep `channel` out of the rotation until the execution nobody awaits any more is done."""
        self._pending += 1

        def finished(task: asyncio.Future[BatchOutcome]) -> None:
            if not task.cancelled():
                task.exception()  # retrieved: the requester is gone, a crash is reported elsewhere
            self._release(channel)
            self._pending -= 1
            if self._pending == 0 and self._drained is not None:
                self._drained.set()

        submit.add_done_callback(finished)

    def _release(self, channel: WorkerChannel) -> None:
        if channel not in self._channels:
            return
        if not channel.alive:
            self._channels.remove(channel)
            if not self._channels:
                self._fail_waiters(WorkerCrashed(f"no live instance of '{self.model_name}'"))
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(channel)
                return
        self._idle.append(channel)

    def add_channel(self, channel: WorkerChannel) -> None:
        """A new (or restarted) instance joins the rotation."""
        self._channels.append(channel)
        self._release(channel)

    def remove_channel(self, channel: WorkerChannel) -> None:
        """An instance leaves the rotation (requests it is executing still finish)."""
        if channel in self._channels:
            self._channels.remove(channel)
        if channel in self._idle:
            self._idle.remove(channel)

    def _fail_waiters(self, error: ServerError | None = None) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(
                    error
                    or ModelNotReady(f"'{self.model_name}' version {self.version} is not at ready state")
                )
