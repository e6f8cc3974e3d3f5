"""What `tritonctl validate` (and the server, before loading) checks of a `sequence_batching` block.

Config rules (check_sequence_config): every control input has exactly one kind with the values it
needs (START/END/READY: one of int32_false_true, fp32_false_true, bool_false_true with two values;
CORRID: a data_type of UINT64, INT64, UINT32, INT32 or STRING), no control or state name is also
a configured input, `oldest.max_candidate_sequences` is at least 1, each `state` names its input,
output, data type and dims, and its `initial_state` agrees with it. Model-file rules
(check_onnx_sequence_tensors): the ONNX graph has every control input with the control's data
type, and every state input and output. `sequence_tensor_names` tells the other rules and
auto-complete which graph tensors the batcher feeds (they are not client inputs).
"""

from __future__ import annotations

from typing import Any

from server.repository.findings import Findings

START, READY, END, CORRID = 0, 1, 2, 3
_KIND_NAMES = {START: "CONTROL_SEQUENCE_START", READY: "CONTROL_SEQUENCE_READY", END: "CONTROL_SEQUENCE_END",
               CORRID: "CONTROL_SEQUENCE_CORRID"}  # fmt: skip
CORRID_TYPES = ("TYPE_UINT64", "TYPE_INT64", "TYPE_UINT32", "TYPE_INT32", "TYPE_STRING")
_FLAG_FIELDS = (("int32_false_true", "TYPE_INT32"), ("fp32_false_true", "TYPE_FP32"),
                ("bool_false_true", "TYPE_BOOL"))  # fmt: skip


def sequence_tensor_names(config: Any) -> tuple[set[str], set[str]]:
    """(graph inputs the batcher feeds: controls and states, graph outputs it takes: states)."""
    if not config.HasField("sequence_batching"):
        return set(), set()
    batching = config.sequence_batching
    inputs = {control.name for control in batching.control_input}
    inputs |= {state.input_name for state in batching.state}
    return inputs, {state.output_name for state in batching.state}


def control_data_types(config: Any) -> dict[str, str]:
    """Control input name -> the TYPE_* its tensor has (as the batcher fills it in)."""
    types: dict[str, str] = {}
    names = type(config).DESCRIPTOR.fields_by_name["input"].message_type.fields_by_name["data_type"]
    enum = names.enum_type
    for control_input in config.sequence_batching.control_input:
        for control in control_input.control:
            if control.kind == CORRID:
                types[control_input.name] = enum.values_by_number[control.data_type].name
                continue
            for field, type_name in _FLAG_FIELDS:
                if len(getattr(control, field)) == 2:
                    types[control_input.name] = type_name
    return types


def check_sequence_config(config: Any, found: Findings) -> None:
    if not config.HasField("sequence_batching"):
        return
    batching = config.sequence_batching
    configured = {tensor.name for tensor in config.input}
    enum = type(config).DESCRIPTOR.fields_by_name["input"].message_type.fields_by_name["data_type"].enum_type
    for index, control_input in enumerate(batching.control_input):
        path = f"sequence_batching.control_input[{index}]"
        if not control_input.name:
            found.error("E350-sequence-control", f"{path}.name", "a control input has no name",
                        "name the model input the batcher fills in (e.g. \"START\")")  # fmt: skip
        if control_input.name in configured:
            found.error(
                "E354-sequence-control-is-input",
                f"{path}.name",
                f'"{control_input.name}" is both a control input and a configured input',
                "remove it from `input`: the sequence batcher fills control tensors in, clients do not",
            )
        if len(control_input.control) != 1:
            found.error(
                "E350-sequence-control",
                f"{path}.control",
                f'control input "{control_input.name}" has {len(control_input.control)} controls',
                "give each control input exactly one control { kind: ... }",
            )
        for position, control in enumerate(control_input.control):
            _check_control(control, f"{path}.control[{position}]", control_input.name, enum, found)
    if batching.HasField("oldest") and batching.oldest.max_candidate_sequences < 1:
        found.error(
            "E352-sequence-oldest-candidates",
            "sequence_batching.oldest.max_candidate_sequences",
            "the oldest strategy needs max_candidate_sequences of at least 1",
            "set max_candidate_sequences: 4 (how many sequences an instance batches from)",
        )
    for index, state in enumerate(batching.state):
        _check_state(state, f"sequence_batching.state[{index}]", configured, enum, found)


def _check_control(control: Any, path: str, name: str, enum: Any, found: Findings) -> None:
    kind = _KIND_NAMES.get(control.kind, str(control.kind))
    set_fields = [field for field, _ in _FLAG_FIELDS if len(getattr(control, field))]
    if control.kind == CORRID:
        type_name = enum.values_by_number[control.data_type].name
        if type_name not in CORRID_TYPES:
            found.error(
                "E351-sequence-control-type",
                f"{path}.data_type",
                f'{kind} of "{name}" has data_type {type_name}',
                f"use one of {', '.join(CORRID_TYPES)}",
            )
        return
    if len(set_fields) != 1 or len(getattr(control, set_fields[0])) != 2:
        found.error(
            "E351-sequence-control-type",
            path,
            f'{kind} of "{name}" needs exactly one of int32_false_true, fp32_false_true or '
            "bool_false_true with two values (false, true)",
            "write e.g. int32_false_true: [0, 1]",
        )


def _check_state(state: Any, path: str, configured: set[str], enum: Any, found: Findings) -> None:
    if not state.input_name or not state.output_name:
        found.error("E353-sequence-state", path, "a state needs input_name and output_name",
                    "name the model's state input and output")  # fmt: skip
    if state.input_name in configured:
        found.error(
            "E353-sequence-state",
            f"{path}.input_name",
            f'state input "{state.input_name}" is also a configured input',
            "remove it from `input`: the batcher feeds the state, clients do not",
        )
    if state.data_type == 0 or not state.dims:
        found.error("E353-sequence-state", path, f'state "{state.input_name}" needs data_type and dims',
                    "add data_type: TYPE_... and dims: [...]")  # fmt: skip
    if len(state.initial_state) > 1:
        found.error("E353-sequence-state", f"{path}.initial_state",
                    f'state "{state.input_name}" has {len(state.initial_state)} initial_state entries',
                    "keep at most one")  # fmt: skip
    for initial in state.initial_state:
        if initial.data_type != state.data_type:
            found.error(
                "E353-sequence-state",
                f"{path}.initial_state",
                f'initial_state of "{state.input_name}" has data_type '
                f"{enum.values_by_number[initial.data_type].name}, the state "
                f"{enum.values_by_number[state.data_type].name}",
                "give initial_state the state's data_type",
            )
        if not initial.name:
            found.error("E353-sequence-state", f"{path}.initial_state", "initial_state needs a name",
                        'add name: "initial"')  # fmt: skip
        if any(dim < 0 for dim in initial.dims) or len(initial.dims) != len(state.dims):
            found.error(
                "E353-sequence-state",
                f"{path}.initial_state",
                f'initial_state dims of "{state.input_name}" must be fixed and as many as the state\'s',
                "write the state's dims with every -1 replaced by a size",
            )


def check_onnx_sequence_tensors(config: Any, signature: Any, model_file: Any, found: Findings) -> None:
    """The ONNX graph has the control inputs (with their types) and the state inputs/outputs."""
    if not config.HasField("sequence_batching"):
        return
    inputs = {tensor.name: tensor for tensor in signature.inputs}
    outputs = {tensor.name for tensor in signature.outputs}
    for index, (name, type_name) in enumerate(control_data_types(config).items()):
        graph = inputs.get(name)
        path = f"sequence_batching.control_input[{index}]"
        if graph is None:
            found.error(
                "E508-model-missing-control-input",
                f"{path}.name",
                f'control input "{name}" is not an input of {model_file.name} '
                f"(its inputs: {', '.join(inputs) or 'none'})",
                "name a model input, or remove the control input",
            )
        elif graph.data_type and graph.data_type != type_name:
            found.error(
                "E509-model-control-type",
                path,
                f'control input "{name}" is {graph.data_type} in {model_file.name}, but the control fills '
                f"it as {type_name}",
                f"use the control's field for {graph.data_type} (int32_false_true, fp32_false_true, "
                "bool_false_true; CORRID: data_type)",
            )
    for index, state in enumerate(config.sequence_batching.state):
        for name, present, side in ((state.input_name, state.input_name in inputs, "input"),
                                    (state.output_name, state.output_name in outputs, "output")):  # fmt: skip
            if name and not present:
                found.error(
                    "E512-model-missing-state",
                    f"sequence_batching.state[{index}].{side}_name",
                    f'state {side} "{name}" is not an {side} of {model_file.name}',
                    f"name the model's state {side}",
                )
