"""The seam between the DataPlane and a model version's instances.

A Scheduler owns the queue of one model version and decides which requests go together to which
instance (WorkerChannel). `DefaultScheduler` sends one request per execution to the next free
instance; the dynamic batcher (dynamic_batcher.py) forms batches by rows. The DataPlane calls
`submit` (or `infer`), `start` and `stop`.
"""

from __future__ import annotations

import abc
import asyncio

from server.core.types import InferenceRequest, InferenceResult


class Scheduler(abc.ABC):
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
