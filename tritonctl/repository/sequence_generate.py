"""`tritonctl config generate` for stateful ONNX models: the `sequence_batching` block.

Graph inputs named START, END, READY or CORRID (any case) become control inputs filled in by the
sequence batcher (START/END/READY with the false/true field of their data type, CORRID with its
data type); `--sequence-state IN:OUT` pairs (or graph input/output pairs named *_IN / *_OUT or
INPUT_* / OUTPUT_* ... with one stem) become implicit `state` entries with a zero initial state.
None of these are client inputs, so they stay out of `input` / `output`.
"""

from __future__ import annotations

from typing import Any

from server.errors import ConfigError
from server.repository.autocomplete import ModelSignature, TensorSignature

_CONTROL_KINDS = {"START": 0, "READY": 1, "END": 2, "CORRID": 3}
_FLAG_FIELDS = {
    "TYPE_INT32": "int32_false_true",
    "TYPE_FP32": "fp32_false_true",
    "TYPE_BOOL": "bool_false_true",
}
_CORRID_TYPES = ("TYPE_UINT64", "TYPE_INT64", "TYPE_UINT32", "TYPE_INT32", "TYPE_STRING")
STRATEGIES = ("direct", "oldest")


def _stem(name: str, markers: tuple[str, ...]) -> str | None:
    upper = name.upper()
    for marker in markers:
        if upper.endswith("_" + marker):
            return upper[: -len(marker) - 1]
        if upper.startswith(marker + "_"):
            return upper[len(marker) + 1 :]
    return None


def detected_states(signature: ModelSignature) -> list[tuple[str, str]]:
    """Input/output pairs that look like a state: STATE_IN/STATE_OUT, INPUT_STATE/OUTPUT_STATE..."""
    outputs = {_stem(t.name, ("OUT", "OUTPUT")): t.name for t in signature.outputs}
    pairs = []
    for tensor in signature.inputs:
        stem = _stem(tensor.name, ("IN", "INPUT"))
        if stem and stem in outputs and "STATE" in tensor.name.upper():
            pairs.append((tensor.name, outputs[stem]))
    return pairs


def add_sequence_batching(
    config: Any, signature: ModelSignature, strategy: str | None, states: tuple[tuple[str, str], ...] = ()
) -> bool:
    """Add `sequence_batching` when asked (`strategy`) or when the graph has control inputs; True if added."""
    inputs = {t.name: t for t in signature.inputs}
    outputs = {t.name: t for t in signature.outputs}
    controls = {name: t for name, t in inputs.items() if name.upper() in _CONTROL_KINDS}
    if strategy is None and not controls:
        return False
    if strategy not in (None, *STRATEGIES):
        raise ConfigError(f"--sequence must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    batching = config.sequence_batching
    if strategy == "oldest":
        batching.oldest.max_candidate_sequences = 4
    else:
        batching.direct.SetInParent()
    for name, tensor in controls.items():
        _add_control(batching, name, tensor)
    for input_name, output_name in states or tuple(detected_states(signature)):
        state_input, state_output = inputs.get(input_name), outputs.get(output_name)
        if state_input is None or state_output is None:
            raise ConfigError(
                f"--sequence-state {input_name}:{output_name}: the model has no such input/output"
            )
        _add_state(config, batching, state_input)
        batching.state[-1].output_name = output_name
    return True


def _add_control(batching: Any, name: str, tensor: TensorSignature) -> None:
    kind = _CONTROL_KINDS[name.upper()]
    control = batching.control_input.add(name=name).control.add(kind=kind)
    if kind == 3:
        if tensor.data_type not in _CORRID_TYPES:
            raise ConfigError(
                f"CORRID input '{name}' is {tensor.data_type}; it must be one of {_CORRID_TYPES}"
            )
        control.data_type = (
            type(batching)
            .DESCRIPTOR.fields_by_name["state"]
            .message_type.fields_by_name["data_type"]
            .enum_type.values_by_name[tensor.data_type]
            .number
        )
        return
    field = _FLAG_FIELDS.get(tensor.data_type)
    if field is None:
        raise ConfigError(f"control input '{name}' is {tensor.data_type}; it must be INT32, FP32 or BOOL")
    getattr(control, field).extend([False, True] if field == "bool_false_true" else [0, 1])


def _add_state(config: Any, batching: Any, tensor: TensorSignature) -> None:
    state = batching.state.add(input_name=tensor.name)
    enum = (
        type(batching).DESCRIPTOR.fields_by_name["state"].message_type.fields_by_name["data_type"].enum_type
    )
    state.data_type = enum.values_by_name[tensor.data_type or "TYPE_FP32"].number
    dims = list(tensor.dims or (1,))
    if config.max_batch_size > 0 or (dims[:1] == [-1] and len(dims) > 1):
        dims = dims[1:]  # the batch axis
    state.dims.extend(dims or [1])
    fixed = [dim if dim > 0 else 1 for dim in state.dims]
    state.initial_state.add(name="zeros", data_type=state.data_type, dims=fixed, zero_data=True)
