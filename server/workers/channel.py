"""The one seam between the main process and an instance's worker process.

`submit(requests)` hands a batch to one model instance and returns one outcome per request.
Production uses `ShmWorkerChannel` (server/workers/shm_channel.py): tensor bytes written once into
the worker's shared-memory arena, a small control record over a socket; tests of pure scheduling
logic may use an in-process channel. Nothing here pickles arrays or request objects.
"""

from __future__ import annotations

import abc
import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from server.errors import ServerError
from server.vocabulary.types import InferenceRequest, InferenceResult

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig


@dataclass(slots=True)
class BatchOutcome:
    """One result or error per submitted request (same order), plus the batch's timings in ns."""

    results: list[InferenceResult | ServerError]
    compute_input_ns: int = 0
    compute_infer_ns: int = 0
    compute_output_ns: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class WorkerChannel(abc.ABC):
    """A live model instance that executes one batch at a time."""

    #: e.g. "resnet_0_cpu" / "resnet_1_gpu0": shown in logs, the index and metrics.
    instance_name: str
    #: The config as the model completed it while loading (a python model's auto_complete_config);
    #: None when it left the config as given. The registry serves this one, as Triton does.
    completed_config: ModelConfig | None = None
    #: Batches the instance accepts before the first returns (its scheduler's InstancePool lends
    #: this many slots). A worker process has one arena slot per batch (WorkerOptions.max_in_flight).
    max_in_flight: int = 1

    @property
    def incarnation(self) -> object:
        """The running worker behind this channel: another object once it was restarted (the
        state a stateful model kept in the old one is gone). A channel that never restarts: itself."""
        return self

    @abc.abstractmethod
    async def submit(self, requests: list[InferenceRequest]) -> BatchOutcome:
        """Execute `requests` as one batch (their rows concatenated for batching backends).

        Raises WorkerCrashed if the process dies meanwhile; per-request model errors come back
        inside BatchOutcome.results.
        """

    def submit_now(self, requests: list[InferenceRequest]) -> asyncio.Future[BatchOutcome] | None:
        """`submit` without a task: the batch goes out now and the future settles with its outcome
        (it is not cancelled with a caller). None when that cannot be done at once (no slot
        free, not running): then await `submit`. Channels without a fast path return None."""
        return None

    @property
    def model_ready(self) -> bool:
        """What the model itself says (a python model's optional `is_ready()`); True without one."""
        return True

    @property
    @abc.abstractmethod
    def alive(self) -> bool:
        """False once the worker process is gone (crashed or closed)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop the worker (finalize the model), release shared memory. Idempotent."""

    @abc.abstractmethod
    def kill(self) -> None:
        """SIGKILL the worker process now, when waiting for it is no option (shutdown ran out of
        time). The batches it is executing fail with WorkerCrashed; `close()` still releases the
        rest. Idempotent, and harmless on a worker that is already gone."""
