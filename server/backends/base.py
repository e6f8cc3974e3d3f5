"""The Backend seam: what a framework adapter does inside a worker process.

A worker hands its backend one `Batch` at a time. Input bytes are zero-copy views of the worker's
shared-memory arena: for each input, the requests' bytes lie back to back in request order, so a
batching backend reads the whole batch with one `np.frombuffer(...).reshape(total_rows, ...)`.
The backend answers with one `RequestOutputs` (output name -> array) or one ServerError per request.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from server.errors import BackendError, ServerError
from server.vocabulary.dtypes import WIRE_TO_NUMPY, config_to_wire, deserialize_bytes, element_count

NDArray = npt.NDArray[Any]


@dataclass(slots=True)
class OutputArray:
    """An output of one request; `datatype` overrides the wire type numpy's dtype would give (BF16)."""

    array: NDArray
    datatype: str | None = None


RequestOutputs = dict[str, OutputArray]


class OutputsWithParameters(dict[str, OutputArray]):
    """RequestOutputs plus the response's parameters (python models may set them)."""

    parameters: dict[str, Any] | None = None


@dataclass(slots=True)
class RequestInput:
    """One input tensor of one request: raw bytes (BYTES in Triton's length-prefixed format)."""

    name: str
    datatype: str
    shape: list[int]
    data: memoryview

    def to_numpy(self) -> NDArray:
        """A zero-copy array over the arena (BYTES: an object array of bytes, decoded)."""
        if self.datatype == "BYTES":
            return deserialize_bytes(self.data, element_count(self.shape)).reshape(self.shape)
        return np.frombuffer(self.data, dtype=WIRE_TO_NUMPY[self.datatype]).reshape(self.shape)


@dataclass(slots=True)
class BatchInput:
    """All requests' bytes of one input, back to back in request order."""

    name: str
    datatype: str
    shapes: list[list[int]]
    data: memoryview

    def stacked(self) -> NDArray | None:
        """The batch as one array of shape (total rows, ...) when every request shares the
        non-batch dims; None when they differ (then the backend runs the requests one by one)."""
        first = self.shapes[0]
        if self.datatype == "BYTES" or not first or any(s[1:] != first[1:] for s in self.shapes):
            return None
        rows = sum(s[0] for s in self.shapes)
        return np.frombuffer(self.data, dtype=WIRE_TO_NUMPY[self.datatype]).reshape([rows, *first[1:]])


class RequestControl:
    """What a request offers a model besides its tensors: its cancellation flag and its responses
    sent one by one (response senders). The instance executing the request makes one (the worker
    process: workers/worker_side.py; in-process: workers/inprocess_side.py).

    `streamed`: the request belongs to a decoupled model, so each `send` goes to the client as it
    is made; otherwise the one response sent is kept in `sent` and answers the request."""

    __slots__ = ("finished", "request", "sent", "streamed")

    def __init__(self, streamed: bool = False) -> None:
        self.streamed = streamed
        self.finished = False  # the final flag was sent
        self.sent: RequestOutputs | ServerError | None = None
        self.request: Request | None = None

    def attach(self, request: Request) -> None:
        """Become `request`'s control. Only a streamed send needs the request back, and only until
        its final response: request <-> control is a cycle, left to refcounting once that ends."""
        request.control = self
        if self.streamed:
            self.request = request

    def streamed_request(self, final: bool) -> Request:
        """The request a streamed send answers; dropped with the final one (see `attach`)."""
        request = self.request
        assert request is not None
        if final:
            self.request = None
        return request

    def is_cancelled(self) -> bool:
        return False

    def send(self, outputs: RequestOutputs | ServerError | None, final: bool) -> None:
        """One response (None: a flags-only final). Streamed: out now; else kept in `sent`."""
        if not self.streamed:
            self.sent = outputs
        self.finished = self.finished or final

    def fail(self, error: ServerError) -> None:
        """execute() raised: a streamed request still open ends with this error."""
        if self.streamed and not self.finished:
            self.send(error, True)


@dataclass(slots=True)
class Request:
    id: str
    inputs: dict[str, RequestInput]
    requested_outputs: list[str]  # never empty: every configured output when the client named none
    parameters: dict[str, Any] = field(default_factory=dict)
    explicit_outputs: bool = True  # False: the client named no output, so it gets whatever the model makes
    control: RequestControl | None = None  # cancellation and response senders (python models)

    @property
    def rows(self) -> int:
        first = next(iter(self.inputs.values()), None)
        return first.shape[0] if first is not None and first.shape else 1


@dataclass(slots=True)
class Batch:
    requests: list[Request]
    # present only when every request carries that input (and, in-process, the backend reads them)
    inputs: dict[str, BatchInput]


@dataclass(frozen=True)
class BackendContext:
    """Everything a backend needs to load one model instance."""

    model_name: str
    version: int
    model_dir: Path  # the model's folder (holding config.pbtxt and the version folders)
    config: Any  # inference.ModelConfig (after auto-complete)
    instance_name: str
    instance_kind: str  # KIND_CPU | KIND_GPU | KIND_MODEL
    device_id: int | None  # the GPU ordinal the config named; inside the worker it is cuda:0
    backend_parameters: dict[str, str]  # the server-level backend_config for this backend
    log_verbose: int = 0
    config_json: str = ""  # the config in Triton's JSON shape (GET .../config), made by the main process
    auto_complete: bool = True  # False: the server was told not to auto-complete configs
    # True when the instance lives in the server's own process (TRITONCTL_INSTANCE_MODE inline or
    # thread): other models share the interpreter, so a backend must keep its globals to itself.
    in_process: bool = False

    @property
    def version_dir(self) -> Path:
        return self.model_dir / str(self.version)

    def model_file(self, default_name: str) -> Path:
        return self.version_dir / (self.config.default_model_filename or default_name)

    def parameter(self, key: str, default: str | None = None) -> str | None:
        """A model `parameters` entry, else the server-level backend config, else default."""
        if key in self.config.parameters:
            return str(self.config.parameters[key].string_value)
        return self.backend_parameters.get(key, default)

    @property
    def uses_gpu(self) -> bool:
        return self.instance_kind == "KIND_GPU"


class Backend(abc.ABC):
    """A framework adapter living inside one worker process (or, in-process, the server's)."""

    #: False for backends that never read `Batch.inputs` (they take each request's own inputs):
    #: an in-process instance then skips concatenating the requests' bytes into one buffer.
    reads_batch_inputs: ClassVar[bool] = True
    #: Where the model's calls to other models go (BLS); set by the instance once it has a side link.
    upcalls: Any = None

    def __init__(self, context: BackendContext) -> None:
        self.context = context

    @abc.abstractmethod
    def load(self) -> None:
        """Load the model; raise (any exception) with a message that says why it cannot load."""

    @abc.abstractmethod
    def execute(self, batch: Batch) -> list[RequestOutputs | ServerError]:
        """Run one batch; one entry per request, in order."""

    def unload(self) -> None:  # noqa: B027 - optional hook, most backends need nothing
        """Release the model (called once, before the worker exits normally)."""

    # -- helpers for batching frameworks ---------------------------------------------------------

    def input_names(self) -> list[str]:
        return [tensor.name for tensor in self.context.config.input]

    def output_names(self) -> list[str]:
        return [tensor.name for tensor in self.context.config.output]

    def config_datatype(self, name: str) -> str | None:
        for tensor in (*self.context.config.input, *self.context.config.output):
            if tensor.name == name:
                from server.backends.config_proto import model_config_pb2

                return config_to_wire(model_config_pb2().DataType.Name(tensor.data_type))
        return None


def split_rows(array: NDArray, rows: list[int]) -> list[NDArray]:
    """Cut a batched output back into the requests' row ranges (views, no copy)."""
    if len(rows) == 1:
        return [array]
    if array.ndim == 0 or array.shape[0] != sum(rows):
        raise BackendError(
            f"the model returned {array.shape[0] if array.ndim else 0} rows for a batch of {sum(rows)}"
        )
    bounds = np.cumsum(rows)[:-1]
    return list(np.split(array, bounds))


def run_each(
    requests: list[Request], run_one: Callable[[Request], RequestOutputs], failure: str
) -> list[RequestOutputs | ServerError]:
    """Run the requests one by one (a batch that cannot run as one): each gets its own answer.

    A ServerError is that request's answer; any other exception (the framework's own errors)
    becomes a BackendError "<failure>: <exception>". Either way the next request still runs.
    """
    results: list[RequestOutputs | ServerError] = []
    for request in requests:
        try:
            results.append(run_one(request))
        except ServerError as exc:
            results.append(exc)
        except Exception as exc:
            results.append(BackendError(f"{failure}: {exc}"))
    return results
