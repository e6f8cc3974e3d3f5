"""Stand-in worker channels for scheduler tests and benchmarks (no process)."""

from __future__ import annotations

from server.errors import ServerError
from server.vocabulary.types import InferenceRequest, InferenceResult
from server.workers.channel import BatchOutcome, WorkerChannel


class LiveChannel(WorkerChannel):
    """A stand-in instance that is always alive and has nothing to close or kill: subclasses
    give `submit` (what the test records or answers)."""

    @property
    def alive(self) -> bool:
        return True

    async def close(self) -> None:
        return None

    def kill(self) -> None:
        return None


class InstantChannel(LiveChannel):
    """Answers every request at once with its own input (no process, no copy)."""

    instance_name = "bench_0"

    async def submit(self, requests: list[InferenceRequest]) -> BatchOutcome:
        results: list[InferenceResult | ServerError] = [
            InferenceResult(r.model, r.version, r.inputs, r.id) for r in requests
        ]
        return BatchOutcome(results, compute_input_ns=1, compute_infer_ns=1, compute_output_ns=1)
