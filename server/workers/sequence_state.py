"""Implicit state of stateful models, kept in the worker beside the model that owns the sequences.

A model with `sequence_batching` is wrapped in a `SequenceBackend`. For every batch row the
sequence batcher (server/core/scheduler/sequence.py) sets two request parameters: the row's slot
on this instance (`_sequence_slot`, -1 for a null row) and its flags (`_sequence_flags`: 1 START,
2 END, 4 null row). For each `sequence_batching.state` entry the wrapper

- adds the state input (`input_name`) to each row: the initial state on START (or for a null
  row, or a slot without state yet), else the output state the slot's previous request left;
- asks the model for the state output (`output_name`) too, takes it out of the answer (the client
  never sees it) and keeps a copy for the slot's next request; END forgets the slot's state.

Any backend that takes named inputs and makes named outputs works so: onnxruntime and TorchScript
(state tensors are graph inputs/outputs) and python models, which read the state with
`pb_utils.get_input_tensor_by_name(request, "<input_name>")` and return the next one as an output
tensor named `<output_name>` in their InferenceResponse. The state dies with the worker: the
batcher ends the sequences of a crashed instance instead of starting them again from zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from server.backends.base import Backend, Batch, BatchInput, NDArray, Request, RequestInput, RequestOutputs
from server.errors import LoadError, ServerError
from server.vocabulary.dtypes import WIRE_TO_NUMPY, config_to_wire, serialize_bytes

SLOT_PARAMETER, FLAGS_PARAMETER = "_sequence_slot", "_sequence_flags"
FLAG_START, FLAG_END, FLAG_NULL = 1, 2, 4
INITIAL_STATE_FOLDER = "initial_state"


@dataclass(frozen=True, slots=True)
class StateSpec:
    input_name: str
    output_name: str
    datatype: str  # wire name
    initial: NDArray  # one row (with the batch dimension for batching models)


def state_specs(config: Any, model_dir: Any) -> list[StateSpec]:
    """The config's `sequence_batching.state` entries with their initial values; raises LoadError."""
    from server.backends.config_proto import model_config_pb2

    names = model_config_pb2().DataType
    specs = []
    batched = config.max_batch_size > 0
    for state in config.sequence_batching.state:
        datatype = config_to_wire(names.Name(state.data_type))
        dtype = np.dtype(object) if datatype == "BYTES" else WIRE_TO_NUMPY[datatype]
        dims = [max(1, int(dim)) for dim in state.dims]
        initial = np.zeros(dims, dtype=dtype) if datatype != "BYTES" else np.full(dims, b"", dtype=object)
        if state.initial_state:
            first = state.initial_state[0]
            dims = [int(dim) for dim in first.dims] or dims
            if first.WhichOneof("state_data") == "data_file":
                path = model_dir / INITIAL_STATE_FOLDER / first.data_file
                try:
                    raw = path.read_bytes()
                except OSError as exc:
                    raise LoadError(f"initial_state of state '{state.input_name}': {exc}") from None
                if datatype == "BYTES":
                    initial = np.array([raw], dtype=object).reshape(dims)
                else:
                    count = int(np.prod(dims))
                    needed = count * np.dtype(dtype).itemsize
                    if len(raw) < needed:
                        raise LoadError(
                            f"initial_state setting expects {needed} bytes, but the data provided from "
                            f"{first.data_file} only has {len(raw)} bytes"
                        )
                    initial = np.frombuffer(raw[:needed], dtype=dtype).reshape(dims).copy()
            else:
                initial = (
                    np.zeros(dims, dtype=dtype) if datatype != "BYTES" else np.full(dims, b"", dtype=object)
                )
        if batched:
            initial = initial.reshape([1, *initial.shape])
        specs.append(StateSpec(state.input_name, state.output_name, datatype, initial))
    return specs


class SequenceBackend(Backend):
    """Wraps the backend of a sequence model: strips the batcher's row parameters, keeps state."""

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner.context)
        self.inner = inner
        self.specs: list[StateSpec] = []
        self._state_outputs: set[str] = set()
        self._states: dict[int, dict[str, NDArray]] = {}  # slot -> state input name -> value

    def load(self) -> None:
        self.inner.load()
        self.context = self.inner.context  # a python model may have completed its config
        self.specs = state_specs(self.context.config, self.context.model_dir)
        self._state_outputs = {spec.output_name for spec in self.specs}

    def unload(self) -> None:
        self.inner.unload()

    def output_names(self) -> list[str]:
        return self.inner.output_names()

    def input_names(self) -> list[str]:
        return self.inner.input_names()

    def __getattr__(self, name: str) -> Any:  # completed_config_json, async_execute, ...
        return getattr(self.inner, name)

    @property
    def upcalls(self) -> Any:
        """Where the model's BLS calls go: the wrapped backend's (the worker sets it on us)."""
        return self.inner.upcalls

    @upcalls.setter
    def upcalls(self, value: Any) -> None:
        self.inner.upcalls = value

    def execute(self, batch: Batch) -> list[RequestOutputs | ServerError]:
        rows: list[tuple[int, int]] = []
        for request in batch.requests:
            parameters = request.parameters
            rows.append(
                (int(parameters.pop(SLOT_PARAMETER, -1)), int(parameters.pop(FLAGS_PARAMETER, FLAG_NULL)))
            )
        if not self.specs:
            return self.inner.execute(batch)
        for spec in self.specs:
            values = [self._state_for(slot, flags, spec) for slot, flags in rows]
            for request, value in zip(batch.requests, values, strict=True):
                request.inputs[spec.input_name] = _request_input(spec, value)
                if spec.output_name not in request.requested_outputs:
                    request.requested_outputs = [*request.requested_outputs, spec.output_name]
            batch.inputs[spec.input_name] = _batch_input(spec, values)
        results = self.inner.execute(batch)
        for request, (slot, flags), result in zip(batch.requests, rows, results, strict=False):
            if isinstance(result, ServerError):
                continue
            kept = {}
            for spec in self.specs:
                produced = result.pop(spec.output_name, None)
                if produced is not None:
                    kept[spec.input_name] = np.array(produced.array, copy=True)
            request.requested_outputs = [n for n in request.requested_outputs if n not in self._state_outputs]
            if flags & FLAG_NULL:
                continue
            if flags & FLAG_END:
                self._states.pop(slot, None)
            elif kept:
                self._states.setdefault(slot, {}).update(kept)
        return results

    def _state_for(self, slot: int, flags: int, spec: StateSpec) -> NDArray:
        if flags & (FLAG_START | FLAG_NULL):
            if flags & FLAG_START:
                self._states.pop(slot, None)
            return spec.initial
        value = self._states.get(slot, {}).get(spec.input_name)
        return spec.initial if value is None else value


def _to_bytes(spec: StateSpec, value: NDArray) -> bytes:
    if spec.datatype == "BYTES":
        return serialize_bytes(value)
    return np.ascontiguousarray(value, dtype=WIRE_TO_NUMPY[spec.datatype]).tobytes()


def _request_input(spec: StateSpec, value: NDArray) -> RequestInput:
    return RequestInput(spec.input_name, spec.datatype, list(value.shape), memoryview(_to_bytes(spec, value)))


def _batch_input(spec: StateSpec, values: list[NDArray]) -> BatchInput:
    data = b"".join(_to_bytes(spec, value) for value in values)
    return BatchInput(
        spec.input_name, spec.datatype, [list(value.shape) for value in values], memoryview(data)
    )


def wrap_sequence_backend(backend: Backend, config: Any) -> Backend:
    """`backend` wrapped for a sequence model (config `sequence_batching`), else unchanged."""
    if config.HasField("sequence_batching"):
        return SequenceBackend(backend)
    return backend


__all__ = ["Request", "SequenceBackend", "StateSpec", "state_specs", "wrap_sequence_backend"]
