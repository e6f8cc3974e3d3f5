"""The seam between the DataPlane and a model version's instances.

A Scheduler owns the queue of one model version and decides which requests go together to which
instance (WorkerChannel). `DefaultScheduler` sends one request per execution to the next free
instance; the dynamic batcher (dynamic_batcher.py) forms batches by rows. The DataPlane only
calls `infer`, `start` and `stop`.
"""

from __future__ import annotations

import abc

from server.core.types import InferenceRequest, InferenceResult


class Scheduler(abc.ABC):
    @abc.abstractmethod
    async def infer(self, request: InferenceRequest) -> InferenceResult:
        """Queue the request, wait for its instance to execute it, return its result or raise ServerError."""

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
