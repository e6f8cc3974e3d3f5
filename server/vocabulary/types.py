"""The protocol-free request and response objects that cross the DataPlane seam.

Front ends decode HTTP/gRPC into these; the scheduler batches them; the worker channel writes
their bytes into shared memory. Tensor data stays raw bytes (little-endian, BYTES in Triton's
length-prefixed format) from the socket to the worker: no decode to numpy in the main process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.vocabulary.shm_regions import RegionInput
    from server.vocabulary.stream import ResponseStream


@dataclass(slots=True)
class Tensor:
    """One named tensor: Triton wire dtype (`FP32`, `BYTES`, ...), shape and raw bytes."""

    name: str
    datatype: str
    shape: list[int]
    data: bytes | bytearray | memoryview
    parameters: dict[str, Any] = field(default_factory=dict)
    # An input still in a client's shared-memory region (vocabulary/shm_regions.py): `data` is a
    # placeholder of the right length until the worker (or `materialize`) reads it.
    source: RegionInput | None = None


@dataclass(slots=True)
class RequestedOutput:
    """An output the client asked for; protocol options (binary_data, classification) in parameters."""

    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ComposingTimings:
    """Compute time that the steps of one ensemble request spent in their models.

    Triton reports an ensemble's compute durations as these sums; schedulers add to the
    `timings` of a request that carries one (an ensemble step) and leave other requests alone."""

    compute_input_ns: int = 0
    compute_infer_ns: int = 0
    compute_output_ns: int = 0

    def add(self, compute_input_ns: int, compute_infer_ns: int, compute_output_ns: int) -> None:
        self.compute_input_ns += compute_input_ns
        self.compute_infer_ns += compute_infer_ns
        self.compute_output_ns += compute_output_ns


@dataclass(slots=True)
class InferenceRequest:
    """A decoded inference request. `version` "" means: let the version policy (or weights) choose."""

    model: str
    version: str
    inputs: list[Tensor]
    outputs: list[RequestedOutput] = field(default_factory=list)
    id: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    arrival_ns: int = field(default_factory=time.monotonic_ns)
    timings: ComposingTimings | None = None  # set on an ensemble step: where its times are summed
    # A decoupled model's responses go here (the DataPlane sets it); None: one result, in the future.
    stream: ResponseStream | None = None
    # Set by the instance executing the request: tells the model the client went away (is_cancelled).
    cancel_hook: Callable[[], None] | None = None
    # A BLS call: the models whose executions wait on it, outermost first (a call to one of them
    # would wait on itself: refused, core/upcalls.py).
    callers: tuple[str, ...] = ()

    def batch_rows(self, max_batch_size: int) -> int:
        """Rows this request contributes to a batch (1 for models without batching)."""
        if max_batch_size <= 0 or not self.inputs or not self.inputs[0].shape:
            return 1
        return self.inputs[0].shape[0]


@dataclass(slots=True)
class InferenceResult:
    """The answer to one request: the outputs it asked for (all when it named none)."""

    model: str
    version: str
    outputs: list[Tensor]
    id: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
