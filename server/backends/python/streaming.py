"""Response senders (decoupled models, and one response in default mode) and BLS calls for pb_utils.

`InferenceResponseSender.send` hands each response to the request's RequestControl, which sends
it on at once (streamed) or keeps it as the request's one answer. `bls_exec` sends a model's
`InferenceRequest.exec()` up to the server through the instance's upcall client and turns the
answers back into pb_utils responses.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from server.vocabulary.dtypes import WIRE_TO_NUMPY, deserialize_bytes, serialize_bytes

COMPLETE_FINAL = 1
RELEASE_ALL, RELEASE_RESCHEDULE = 1, 2  # TRITONSERVER_REQUEST_RELEASE_*
SEQUENCE_START, SEQUENCE_END = 1, 2  # TRITONSERVER_REQUEST_FLAG_SEQUENCE_*
TRITONSERVER_MEMORY_CPU, TRITONSERVER_MEMORY_CPU_PINNED, TRITONSERVER_MEMORY_GPU = 0, 1, 2


class PreferredMemory:
    """`pb_utils.PreferredMemory(kind, device_id)` for a BLS request's outputs: accepted; outputs
    come back in CPU memory here (no GPU tensors cross the process boundary)."""

    def __init__(
        self, preferred_memory_type: int = TRITONSERVER_MEMORY_CPU, preferred_device_id: int = 0
    ) -> None:
        self.preferred_memory_type = preferred_memory_type
        self.preferred_device_id = preferred_device_id


_CODES = {  # our error classes -> pb_utils.TritonError codes
    "ModelNotFound": 2,
    "InvalidInput": 3,
    "ModelNotReady": 4,
    "QueueFull": 4,
    "RequestTimeout": 4,
    "Unavailable": 4,
    "Unsupported": 5,
    "RequestCancelled": 7,
}


def release_flags(flags: int, released: bool, exception: type[Exception]) -> int:
    """What `request.set_release_flags(flags)` may set: ALL or RESCHEDULE, before execute() returned."""
    if flags not in (RELEASE_ALL, RELEASE_RESCHEDULE):
        raise exception(
            f"set_release_flags: flags must be TRITONSERVER_REQUEST_RELEASE_ALL ({RELEASE_ALL}) or "
            f"TRITONSERVER_REQUEST_RELEASE_RESCHEDULE ({RELEASE_RESCHEDULE}), got {flags!r}"
        )
    if released:
        raise exception(
            "set_release_flags must be called before execute() returns: the request was released "
            "when it returned"
        )
    return flags


class InferenceResponseSender:
    """`request.get_response_sender()`: send(response=None, flags=0), is_cancelled()."""

    def __init__(self, control: Any, convert: Callable[[Any], Any], exception: type[Exception]) -> None:
        self._control = control
        self._convert = convert
        self._exception = exception
        self._closed = False
        self._responses = 0
        self.rescheduled = False  # its request was rescheduled: the next execution's sender sends

    def send(self, response: Any = None, flags: int = 0) -> None:
        if self._closed:
            raise self._exception("Unable to send response. Response sender has been closed.")
        if self.rescheduled:  # the request's next execution may already be sending in its place
            raise self._exception(
                "Unable to send response. The request was rescheduled: the response sender of its "
                "next execution sends its responses."
            )
        final = bool(flags & COMPLETE_FINAL)
        if response is None and not final:
            raise self._exception(
                "Inference Response object must be provided when the response flags is set to zero."
            )
        if response is not None:
            self._responses += 1
            if not self._control.streamed and self._responses > 1:
                raise self._exception(
                    "Unable to send response. Non-decoupled model cannot send more than one response."
                )
        if final:
            self._closed = True
            if not self._control.streamed and self._responses == 0:
                raise self._exception(
                    "Unable to send response. Non-decoupled model cannot send complete final "
                    "before sending a response."
                )
        self._control.send(self._convert(response) if response is not None else None, final)

    def is_cancelled(self) -> bool:
        return bool(self._control.is_cancelled())


def wire_inputs(tensors: list[Any]) -> list[tuple[str, str, list[int], Any]]:
    """pb_utils tensors as (name, wire dtype, shape, array-or-bytes) for the upcall."""
    from server.vocabulary.dtypes import numpy_to_wire

    result = []
    for tensor in tensors:
        array, datatype = tensor._output()
        if datatype is None:
            datatype = "BYTES" if array.dtype.kind in ("O", "S", "U") else numpy_to_wire(array.dtype)
        data = serialize_bytes(array) if datatype == "BYTES" else np.ascontiguousarray(array)
        result.append((tensor.name(), datatype, [int(d) for d in array.shape], data))
    return result


def to_response(item: Any, pb: Any) -> Any:
    """A BLS answer (outputs, error, parameters, final) as a pb_utils.InferenceResponse."""
    outputs, error, parameters, _final = item
    if error is not None:
        return pb.InferenceResponse(error=pb.TritonError(error[1], _CODES.get(error[0], 1)))
    tensors = []
    for name, datatype, shape, data in outputs or ():
        if datatype == "BYTES":
            array = deserialize_bytes(data).reshape(shape)
            tensors.append(pb.Tensor(name, array))
        elif datatype == "BF16":
            tensors.append(pb.Tensor(name, np.frombuffer(data, np.uint16).reshape(shape), "BF16"))
        else:
            tensors.append(
                pb.Tensor(name, np.frombuffer(data, WIRE_TO_NUMPY[datatype]).reshape(shape).copy())
            )
    return pb.InferenceResponse(output_tensors=tensors, parameters=parameters or None)


class ResponseIterator:
    """What `exec(decoupled=True)` returns: the responses as they come; the last one is empty and
    carries the final flag (as Triton's). `cancel()` asks the called model to stop."""

    def __init__(self, answers: queue.SimpleQueue[Any], pb: Any, cancel: Callable[[], None]) -> None:
        self._answers = answers
        self._pb = pb
        self._cancel = cancel
        self._done = False

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        item = self._answers.get()
        if item[3]:
            self._done = True
            if item[0] is None and item[1] is None:  # a flags-only final: Triton yields an empty response
                return self._pb.InferenceResponse()
        return to_response(item, self._pb)

    def cancel(self) -> None:
        if not self._done:
            self._cancel()


def bls_exec(request: Any, pb: Any, client: Any, decoupled: bool) -> Any:
    """Run `request` (a pb_utils.InferenceRequest built by the model) on the server."""
    if client is None:
        return pb.InferenceResponse(
            error=pb.TritonError("BLS calls are not available to this model instance")
        )
    refusal = getattr(client, "refusal", None)
    if refusal:
        return pb.InferenceResponse(error=pb.TritonError(refusal))
    parameters = request._parameters
    if isinstance(parameters, str):
        import json

        parameters = json.loads(parameters or "{}")
    parameters = dict(parameters or {})
    # A call into a sequence: Triton's correlation_id and START/END flags, as the protocols carry them.
    if request.correlation_id():
        parameters["sequence_id"] = request.correlation_id()
    if request.flags() & SEQUENCE_START:
        parameters["sequence_start"] = True
    if request.flags() & SEQUENCE_END:
        parameters["sequence_end"] = True
    model = request.model_name()
    if isinstance(model, bytes):  # read from a BYTES input: Triton's binding takes it as text
        model = model.decode()
    call_id, answers = client.call(
        model=model,
        version=int(request._model_version or -1),
        request_id=request.request_id(),
        inputs=wire_inputs(request.inputs()),
        outputs=request.requested_output_names(),
        parameters=parameters,
        timeout_us=int(request.timeout() or 0),
        decoupled=decoupled,
    )
    if decoupled:
        return ResponseIterator(answers, pb, lambda: client.uncall(call_id))
    return to_response(answers.get(), pb)
