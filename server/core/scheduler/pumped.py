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
from server.vocabulary.types import InferenceRequest, InferenceResult

if TYPE_CHECKING:
    from collections.abc import Sequence

    from server.core.stats import ModelStats
    from server.workers.channel import WorkerChannel


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
