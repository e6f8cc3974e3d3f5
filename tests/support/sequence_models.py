"""Stateful toy models for the sequence batcher tests: accumulators whose answer depends on state.

Both kinds take INPUT (INT32 [1]) and answer
    OUTPUT = (state + INPUT) * READY + 1000 * START + 10000 * END
    CORRID_OUT = the CORRID control tensor (what the batcher filled in for the row)
and keep `state + INPUT` as the next state (implicit state STATE_IN -> STATE_OUT); the python
one exits its worker process on a negative INPUT (the crash tests). So a request
executed in another sequence's slot, out of order, without its control tensors or with a
restarted state gives another number. `expected_outputs(values)` is what one sequence gets back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from tests.support.models import write_config, write_python_source

_ONNX_TYPES = {"TYPE_INT32": 6, "TYPE_INT64": 7, "TYPE_STRING": 8, "TYPE_UINT32": 12, "TYPE_UINT64": 13}
WIRE = {"TYPE_INT32": "INT32", "TYPE_INT64": "INT64", "TYPE_STRING": "BYTES", "TYPE_UINT32": "UINT32",
        "TYPE_UINT64": "UINT64"}  # fmt: skip


def expected_outputs(values: list[int]) -> list[int]:
    """What a whole sequence sending `values` gets back (START on the first, END on the last)."""
    answers, total = [], 0
    for index, value in enumerate(values):
        total += value
        answer = total + (1000 if index == 0 else 0) + (10000 if index == len(values) - 1 else 0)
        answers.append(answer)
    return answers


def sequence_config(
    name: str,
    *,
    backend: str,
    max_batch_size: int = 4,
    strategy: str = "direct",
    corrid_type: str = "TYPE_UINT64",
    instance_count: int = 1,
    idle_us: int = 0,
    extra: str = "",
) -> mc.ModelConfig:
    config = mc.ModelConfig(name=name, max_batch_size=max_batch_size)
    if backend == "onnxruntime":
        config.platform = "onnxruntime_onnx"
    else:
        config.backend = backend
    config.input.add(name="INPUT", data_type=mc.TYPE_INT32, dims=[1])
    config.output.add(name="OUTPUT", data_type=mc.TYPE_INT32, dims=[1])
    config.output.add(name="CORRID_OUT", data_type=mc.DataType.Value(corrid_type), dims=[1])
    config.instance_group.add(count=instance_count, kind=mc.ModelInstanceGroup.KIND_CPU)
    strategy_text = "oldest { max_candidate_sequences: 4 }" if strategy == "oldest" else "direct { }"
    text = f"""
    sequence_batching {{
      {strategy_text}
      {f"max_sequence_idle_microseconds: {idle_us}" if idle_us else ""}
      control_input [
        {{ name: "START" control [ {{ kind: CONTROL_SEQUENCE_START int32_false_true: [0, 1] }} ] }},
        {{ name: "END" control [ {{ kind: CONTROL_SEQUENCE_END int32_false_true: [0, 1] }} ] }},
        {{ name: "READY" control [ {{ kind: CONTROL_SEQUENCE_READY int32_false_true: [0, 1] }} ] }},
        {{ name: "CORRID" control [ {{ kind: CONTROL_SEQUENCE_CORRID data_type: {corrid_type} }} ] }}
      ]
      state [ {{ input_name: "STATE_IN" output_name: "STATE_OUT" data_type: TYPE_INT32 dims: [1]
                initial_state {{ name: "zeros" data_type: TYPE_INT32 dims: [1] zero_data: true }} }} ]
    }}
    {extra}
    """
    text_format.Merge(text, config)
    return config


def write_onnx_accumulator(repo: Path, name: str, **options: Any) -> Path:
    """The accumulator as an ONNX graph (control and state tensors are graph inputs/outputs)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    config = sequence_config(name, backend="onnxruntime", **options)
    corrid_type = options.get("corrid_type", "TYPE_UINT64")
    batched = config.max_batch_size > 0

    def info(tensor: str, onnx_type: int) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(tensor, onnx_type, ["batch", 1] if batched else [1])

    int32 = _ONNX_TYPES["TYPE_INT32"]
    inputs = [info(n, int32) for n in ("INPUT", "START", "END", "READY", "STATE_IN")]
    inputs.append(info("CORRID", _ONNX_TYPES[corrid_type]))
    outputs = [info("OUTPUT", int32), info("STATE_OUT", int32), info("CORRID_OUT", _ONNX_TYPES[corrid_type])]
    nodes = [
        helper.make_node("Add", ["STATE_IN", "INPUT"], ["STATE_OUT"]),
        helper.make_node("Mul", ["STATE_OUT", "READY"], ["kept"]),
        helper.make_node("Mul", ["START", "c1000"], ["started"]),
        helper.make_node("Mul", ["END", "c10000"], ["ended"]),
        helper.make_node("Add", ["kept", "started"], ["partial"]),
        helper.make_node("Add", ["partial", "ended"], ["OUTPUT"]),
        helper.make_node("Identity", ["CORRID"], ["CORRID_OUT"]),
    ]
    constants = [
        numpy_helper.from_array(np.array(1000, np.int32), "c1000"),
        numpy_helper.from_array(np.array(10000, np.int32), "c10000"),
    ]
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    model_dir = repo / name
    write_config(model_dir, config)
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(model_dir / "1" / "model.onnx"))
    return model_dir


PYTHON_ACCUMULATOR = """\
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        import json
        config = json.loads(args["model_config"])
        self.batched = config.get("max_batch_size", 0) > 0
        self.corrid_type = pb_utils.get_output_config_by_name(config, "CORRID_OUT")["data_type"]

    def execute(self, requests):
        responses = []
        for request in requests:
            def value(name):
                return pb_utils.get_input_tensor_by_name(request, name).as_numpy()
            if value("INPUT").reshape(-1)[0] < 0:  # the crash test's way to kill this worker
                os._exit(1)
            state = value("STATE_IN") + value("INPUT")
            start, end, ready = value("START"), value("END"), value("READY")
            output = state * ready + 1000 * start + 10000 * end
            corrid = value("CORRID")
            if ready.reshape(-1)[0]:
                # The control tensor and the request's own correlation id must agree.
                own = request.correlation_id()
                seen = corrid.reshape(-1)[0]
                seen = seen.decode() if isinstance(seen, bytes) else int(seen)
                own = own if isinstance(own, str) else int(own)
                if seen != own:
                    raise pb_utils.TritonModelException(f"CORRID {seen!r} != correlation_id() {own!r}")
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("OUTPUT", output.astype(np.int32)),
                pb_utils.Tensor("STATE_OUT", state.astype(np.int32)),
                pb_utils.Tensor("CORRID_OUT", corrid),
            ]))
        return responses
"""


def write_python_accumulator(repo: Path, name: str, **options: Any) -> Path:
    """The accumulator as a python model: state through pb_utils input/output tensors."""
    config = sequence_config(name, backend="python", **options)
    model_dir = repo / name
    write_config(model_dir, config)
    return write_python_source(model_dir, PYTHON_ACCUMULATOR)


def write_torchscript_accumulator(repo: Path, name: str, **options: Any) -> Path:
    """The accumulator as TorchScript: inputs map by forward()'s argument names, outputs by order
    (configured outputs, then the state output). CORRID is INT64 (torch has no uint64 arithmetic)."""
    import torch

    options.setdefault("corrid_type", "TYPE_INT64")
    config = sequence_config(name, backend="pytorch", **options)
    config.ClearField("backend")
    config.platform = "pytorch_libtorch"

    class Accumulator(torch.nn.Module):
        def forward(  # noqa: PLR0917 - one argument per model input
            self,
            INPUT: torch.Tensor,
            START: torch.Tensor,
            END: torch.Tensor,
            READY: torch.Tensor,
            CORRID: torch.Tensor,
            STATE_IN: torch.Tensor,
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            state = STATE_IN + INPUT
            output = state * READY + 1000 * START + 10000 * END
            return output, CORRID, state

    model_dir = repo / name
    write_config(model_dir, config)
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    torch.jit.script(Accumulator()).save(str(model_dir / "1" / "model.pt"))
    return model_dir


# name -> (writer, options); every model answers expected_outputs(values) for a whole sequence.
SERVER_MODELS: dict[str, tuple[Any, dict[str, Any]]] = {
    # 2 instances x 4 slots: more sequences than slots wait in the backlog.
    "onnx_direct": (write_onnx_accumulator, {"max_batch_size": 4, "instance_count": 2}),
    "onnx_oldest": (
        write_onnx_accumulator,
        {"max_batch_size": 4, "strategy": "oldest", "corrid_type": "TYPE_INT64"},
    ),
    "py_direct": (write_python_accumulator, {"max_batch_size": 0, "instance_count": 2}),
    "py_strings": (write_python_accumulator, {"max_batch_size": 4, "corrid_type": "TYPE_STRING"}),
    "onnx_idle": (write_onnx_accumulator, {"max_batch_size": 1, "idle_us": 300_000}),
    "py_crash": (write_python_accumulator, {"max_batch_size": 2}),  # two sequences, one worker
    "torch_direct": (write_torchscript_accumulator, {"max_batch_size": 4}),
}
