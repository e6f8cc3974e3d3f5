"""The seam between the DataPlane and a model version's instances.

A Scheduler owns the queue of one model version and decides which requests go together to which
instance. The instances belong to the version's InstancePool (pool.py), which lends their slots;
a scheduler is a policy on top of it: `DefaultScheduler` sends one request per execution, the
dynamic batcher (dynamic_batcher.py) forms batches by rows. The DataPlane calls `submit` (or
`infer`), `start` and `stop`.
"""

from __future__ import annotations

import abc
import asyncio
from typing import TYPE_CHECKING

from server.core.scheduler.pool import InstancePool
from server.errors import ModelNotReady
from server.vocabulary.types import InferenceRequest, InferenceResult

if TYPE_CHECKING:
    from collections.abc import Sequence

    from server.workers.channel import WorkerChannel


class PendingCount:
    """Requests a scheduler holds (queued or executing), and a way to wait until none are left.

    Shared by every scheduler instead of each keeping its own counter and drain event."""

    __slots__ = ("_settled", "count")

    def __init__(self) -> None:
        self.count = 0
        self._settled: asyncio.Event | None = None

    def add(self, count: int = 1) -> None:
        self.count += count

    def done(self, count: int = 1) -> None:
        self.count -= count
        if self.count == 0 and self._settled is not None:
            self._settled.set()

    async def settled(self) -> None:
        """Return once no request is pending."""
        while self.count:
            self._settled = asyncio.Event()
            await self._settled.wait()


class Scheduler(abc.ABC):
    #: The model version's instances (None: a scheduler without instances of its own, an ensemble).
    #: The registry adds restarted instances to it and takes failed ones out.
    pool: InstancePool | None = None

    @abc.abstractmethod
    async def infer(self, request: InferenceRequest) -> InferenceResult:
        """Queue the request, wait for its instance to execute it, return its result or raise ServerError."""

    def submit(self, request: InferenceRequest) -> asyncio.Future[InferenceResult]:
        """Queue the request and return the future of its result, without a task per request.

        Raises what `infer` raises before queueing (not ready, queue full) at once; cancelling
        the future withdraws the request like cancelling `infer`. Front ends use this on the hot
        path: one done-callback instead of a task and a chain of coroutines per request.
        """
        return asyncio.ensure_future(self.infer(request))

    @abc.abstractmethod
    async def start(self) -> None:
        """Begin dispatching (instances are already live)."""

    @abc.abstractmethod
    async def stop(self, drain: bool = True) -> None:
        """Stop taking requests; with drain, finish queued ones first, else fail them as unavailable."""

    @property
    @abc.abstractmethod
    def pending(self) -> int:
        """Requests queued or executing (nv_inference_pending_request_count)."""


class PooledScheduler(Scheduler):
    """What every scheduler over an InstancePool shares: the pool, the pending count, whether it
    takes requests. The policies (default, dynamic batching, sequences) add how requests meet
    instances."""

    def __init__(
        self,
        model_name: str,
        version: int | str,
        channels: Sequence[WorkerChannel],
        max_in_flight_per_instance: int | None,
    ) -> None:
        self.model_name = model_name
        self.version = version
        self.pool: InstancePool = InstancePool(model_name, version, channels, max_in_flight_per_instance)
        self._pending = PendingCount()  # queued + executing
        self._accepting = False

    @property
    def pending(self) -> int:
        return self._pending.count

    @property
    def channels(self) -> list[WorkerChannel]:
        return self.pool.channels

    async def start(self) -> None:
        self._accepting = True

    def not_ready(self) -> ModelNotReady:
        return ModelNotReady(f"'{self.model_name}' version {self.version} is not at ready state")
