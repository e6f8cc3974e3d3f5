"""A batch into and out of a backend, the same way wherever the instance runs.

Both executors use these: the worker process (worker.py: inputs are views of the shared-memory
arena, outputs are copied into it) and in-process instances (inprocess.py: inputs are views of the
requests' own bytes, outputs become InferenceResults directly). So a model answers the same
outputs, data types and errors in every instance mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from server.backends.base import Backend, Batch, Request, RequestOutputs
from server.errors import BackendError, RequestRescheduled, ServerError
from server.vocabulary.dtypes import WIRE_TO_NUMPY, numpy_to_wire, serialize_bytes

_WIRE_BY_DTYPE = {dtype: name for name, dtype in WIRE_TO_NUMPY.items() if name not in ("BF16", "BYTES")}

# (name, wire datatype, shape, data): data is a C-contiguous array, or bytes for BYTES tensors.
SelectedTensor = tuple[str, str, list[int], Any]


@dataclass(slots=True)
class SelectedOutputs:
    """What one request gets back: the outputs it asked for and the response's parameters."""

    tensors: list[SelectedTensor]
    parameters: dict[str, Any] | None


STREAMED = SelectedOutputs([], None)  # the batch answer of a streamed request: no outputs


def scalar_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """The request parameters a model sees: plain values only (what a control record can carry)."""
    return {key: value for key, value in parameters.items() if isinstance(value, str | int | float | bool)}


def backend_request(
    request_id: str,
    requested: list[str] | None,
    parameters: dict[str, Any] | None,
    all_outputs: list[str],
) -> Request:
    """A backend Request without inputs yet; no requested outputs means every configured one."""
    return Request(
        id=request_id,
        inputs={},
        requested_outputs=requested or all_outputs,
        parameters=parameters or {},
        explicit_outputs=bool(requested),
    )


def execute_batch(backend: Backend, batch: Batch) -> list[RequestOutputs | ServerError]:
    """Run the backend on `batch`; a model that raises fails every request of the batch, with the
    message Triton's python backend gives, and the instance keeps serving."""
    try:
        results = backend.execute(batch)
        if len(results) != len(batch.requests):
            raise BackendError(
                f"the model returned {len(results)} responses for {len(batch.requests)} requests"
            )
    except ServerError as exc:
        return [exc] * len(batch.requests)
    except Exception as exc:  # user code: report, keep serving
        error = BackendError(
            f"Failed to process the request(s) for model instance "
            f"'{backend.context.instance_name}', message: {type(exc).__name__}: {exc}"
        )
        return [error] * len(batch.requests)
    return results


def select_results(
    batch: Batch, results: list[RequestOutputs | ServerError]
) -> list[SelectedOutputs | ServerError]:
    """Per request: the outputs it asked for (in wire form), or the error it gets instead."""
    selected: list[SelectedOutputs | ServerError] = []
    for request, result in zip(batch.requests, results, strict=True):
        if isinstance(result, RequestRescheduled):  # no answer: its sequence batcher runs it again
            selected.append(result)
            continue
        control = request.control
        if control is not None and control.streamed:  # its responses went out as they were sent
            if isinstance(result, ServerError):
                control.fail(result)
            selected.append(STREAMED)
            continue
        if isinstance(result, ServerError):
            selected.append(result)
            continue
        try:
            tensors = select_outputs(request, result)
        except ServerError as exc:
            selected.append(exc)
            continue
        selected.append(SelectedOutputs(tensors, getattr(result, "parameters", None)))
    return selected


def select_outputs(request: Request, outputs: RequestOutputs) -> list[SelectedTensor]:
    """(name, wire datatype, shape, array-or-bytes) for each output the request asked for."""
    selected = []
    names = request.requested_outputs
    if not request.explicit_outputs:  # configured order first, then anything else the model made
        names = [name for name in names if name in outputs] + [name for name in outputs if name not in names]
    for name in names:
        output = outputs.get(name)
        if output is None:
            raise BackendError(f"the model did not produce the requested output '{name}'")
        array = output.array
        datatype = output.datatype or _WIRE_BY_DTYPE.get(array.dtype)
        if datatype is None:
            try:
                datatype = numpy_to_wire(array.dtype)
            except ServerError as exc:
                raise BackendError(f"output '{name}': {exc.message}") from None
        shape = [int(dim) for dim in array.shape]
        data: Any = serialize_bytes(array) if datatype == "BYTES" else np.ascontiguousarray(array)
        selected.append((name, datatype, shape, data))
    return selected


def nbytes(data: Any) -> int:
    return len(data) if isinstance(data, bytes) else int(data.nbytes)


def to_bytes(data: Any) -> bytes:
    """A selected tensor's data as bytes of its own (never a view of the model's memory)."""
    return data if isinstance(data, bytes) else bytes(data.tobytes())
