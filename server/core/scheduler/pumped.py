"""PumpedScheduler: what the dynamic batcher and the sequence batcher share — a "pump".

Their decisions run in one method, `_pump`, never in a sleep: once per loop tick after requests
arrive (so requests arriving together are decided together), whenever an instance frees up, and
from a single timer armed for the earliest deadline (a batching delay, a queue timeout, an idle
sequence). Everything happens on the one asyncio thread, so no locks.
"""

from __future__ import annotations

import abc
import asyncio
import time
from typing import TYPE_CHECKING, Any

from server.core.scheduler.base import PooledScheduler
from server.errors import BackendError, ServerError
from server.vocabulary.types import InferenceRequest, InferenceResult

if TYPE_CHECKING:
    from collections.abc import Sequence

    from server.core.stats import ModelStats
    from server.workers.channel import BatchOutcome, WorkerChannel


class PumpedScheduler(PooledScheduler):
    stats: ModelStats

    def __init__(
        self,
        model_name: str,
        version: int | str,
        channels: Sequence[WorkerChannel],
        max_in_flight_per_instance: int | None,
    ) -> None:
        super().__init__(model_name, version, channels, max_in_flight_per_instance)
        self.pool.on_available = self._schedule_pump
        self._pump_handle: asyncio.Handle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at_ns = 0
        self._event_loop: asyncio.AbstractEventLoop | None = None

    @abc.abstractmethod
    def _pump(self) -> None:
        """Decide what runs now; arm the timer for the next deadline. Starts with
        `self._pump_handle = None`."""

    @abc.abstractmethod
    def _withdraw(self, item: Any) -> None:
        """The requester cancelled (client gone, deadline): take `item` out if still queued."""

    def _queued(self, item: Any, future: asyncio.Future[InferenceResult]) -> asyncio.Future[InferenceResult]:
        """`item` entered the queue: count it, withdraw it if its future is cancelled, pump."""
        self._pending.count += 1
        future.add_done_callback(lambda settled: self._withdraw(item) if settled.cancelled() else None)
        self._schedule_pump()
        return future

    def _cancelled_in_queue(self, request: InferenceRequest) -> None:
        self.stats.record_failure(request_ns=time.monotonic_ns() - request.arrival_ns, reason="CANCELED")
        self._pending.done()

    async def infer(self, request: InferenceRequest) -> InferenceResult:
        return await self.submit(request)  # a cancelled await cancels the future: the request leaves

    def _loop(self) -> asyncio.AbstractEventLoop:
        if self._event_loop is None:
            self._event_loop = asyncio.get_running_loop()
        return self._event_loop

    def _schedule_pump(self) -> None:
        if self._pump_handle is None:
            self._pump_handle = self._loop().call_soon(self._pump)

    def _arm_timer(self, wake_ns: int, now: int) -> None:
        """Wake the pump at `wake_ns` (monotonic ns; 0: no deadline), unless it wakes earlier."""
        if not wake_ns:
            return
        if self._timer is not None:
            if self._timer_at_ns <= wake_ns:
                return
            self._timer.cancel()
        self._timer_at_ns = wake_ns
        self._timer = self._loop().call_later(max(0, wake_ns - now) / 1e9, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._pump()

    def _stop_pumping(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pump_handle is not None:
            self._pump_handle.cancel()
            self._pump_handle = None

    def _deliver_rows(self, rows: Sequence[Any], outcome: BatchOutcome, dispatch_ns: int) -> None:
        """Answer the requests of an executed batch (a row may be None: an empty sequence slot)
        and count them as Triton 2.51 does: a failed execution is a failure, a model's error
        response a success; one statistics call for the batch's successes."""
        now = time.monotonic_ns()
        results = outcome.results
        answered = request_ns_total = queue_ns_total = settled = 0
        for index, item in enumerate(rows):
            if item is None:
                continue
            settled += 1
            result = results[index] if index < len(results) else BackendError("the instance gave no answer")
            future: asyncio.Future[InferenceResult] = item.waiter
            request_ns = now - item.request.arrival_ns
            if isinstance(result, ServerError) and not result.model_response:  # execution failed
                self.stats.record_failure(request_ns=request_ns, reason="BACKEND")
                if not future.done():
                    future.set_exception(result)
            elif future.done():  # cancelled while its batch ran: the answer has nobody to go to
                self.stats.record_failure(request_ns=request_ns, reason="CANCELED")
            else:  # an answer, even an error response: a success to Triton 2.51
                answered += 1
                request_ns_total += request_ns
                queue_ns_total += dispatch_ns - item.enqueue_ns
                if isinstance(result, ServerError):
                    future.set_exception(result)
                    continue
                timings = item.request.timings
                if timings is not None:  # an ensemble step: the ensemble reports the sums
                    timings.add(outcome.compute_input_ns, outcome.compute_infer_ns, outcome.compute_output_ns)
                future.set_result(result)
        if answered:  # one statistics call per batch keeps counting off the per-request path
            self.stats.record_successes(
                answered,
                request_ns_total=request_ns_total,
                queue_ns_total=queue_ns_total,
                compute_input_ns=outcome.compute_input_ns,
                compute_infer_ns=outcome.compute_infer_ns,
                compute_output_ns=outcome.compute_output_ns,
            )
        self._pending.done(settled)
