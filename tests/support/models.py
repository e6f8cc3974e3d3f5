"""Toy models for tests: python-backend, ONNX and TorchScript, each with its config.pbtxt.

Every writer creates `<repo>/<name>/config.pbtxt` and `<repo>/<name>/<version>/model.<ext>` and returns
the model directory. Common options (all writers):

    max_batch_size=8        0 disables batching (dims are then the full shape)
    dynamic_batching=False  True for `dynamic_batching {}`, or a dict of its fields
                            (preferred_batch_size, max_queue_delay_microseconds, ...)
    instance_count=1, instance_kind="KIND_CPU", dtype="TYPE_FP32", dims=[-1], version=1,
    parameters={}           model `parameters` (string values)

Python kinds (tensor names INPUT0/INPUT1 -> OUTPUT0/OUTPUT1):
    identity        OUTPUT0 = INPUT0
    add_sub         OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1 (written like Triton's docs example)
    strings         BYTES: OUTPUT0 = each element of INPUT0 upper-cased
    slow            identity after sleeping `delay_ms` (option, default 100) once per execute() call
    crash           identity, but the process dies when INPUT0 holds a negative number;
                    how="exit" (os._exit), "segfault" or "kill" (SIGKILL)
    init_fails      initialize() raises RuntimeError(INIT_FAILURE_MESSAGE)
    execute_raises  mode="raise": execute() raises TritonModelException(EXECUTE_FAILURE_MESSAGE);
                    mode="per_request": requests with a negative number get an error response
                    (EXECUTE_FAILURE_MESSAGE), the others an identity answer
"""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

INIT_FAILURE_MESSAGE = "initialize failed on purpose"
EXECUTE_FAILURE_MESSAGE = "execute failed on purpose"

PYTHON_KINDS = ("identity", "add_sub", "strings", "slow", "crash", "init_fails", "execute_raises")
ONNX_KINDS = ("identity", "add_sub", "mlp")
TORCHSCRIPT_KINDS = ("add_sub",)

_COMMON_OPTIONS = {
    "max_batch_size",
    "dynamic_batching",
    "instance_count",
    "instance_kind",
    "dtype",
    "dims",
    "version",
    "parameters",
}

# --------------------------------------------------------------------------------------------------
# config.pbtxt


def _tensor(name: str, dtype: str, dims: list[int]) -> tuple[str, int, list[int]]:
    return name, mc.DataType.Value(dtype), list(dims)


def build_config(
    name: str,
    *,
    backend: str = "",
    platform: str = "",
    inputs: list[tuple[str, int, list[int]]],
    outputs: list[tuple[str, int, list[int]]],
    max_batch_size: int = 8,
    dynamic_batching: bool | dict[str, Any] = False,
    instance_count: int = 1,
    instance_kind: str = "KIND_CPU",
    parameters: dict[str, str] | None = None,
) -> mc.ModelConfig:
    """A ModelConfig message for a toy model (tests may tweak it further before writing)."""
    config = mc.ModelConfig(name=name, max_batch_size=max_batch_size)
    if backend:
        config.backend = backend
    if platform:
        config.platform = platform
    for tensor_name, data_type, dims in inputs:
        entry = config.input.add(name=tensor_name, data_type=data_type)
        entry.dims.extend(dims)
    for tensor_name, data_type, dims in outputs:
        entry = config.output.add(name=tensor_name, data_type=data_type)
        entry.dims.extend(dims)
    group = config.instance_group.add(count=instance_count)
    group.kind = mc.ModelInstanceGroup.Kind.Value(instance_kind)
    if dynamic_batching is not False:
        config.dynamic_batching.SetInParent()
        if isinstance(dynamic_batching, dict):
            for key, value in dynamic_batching.items():
                field = getattr(config.dynamic_batching, key)
                if isinstance(value, list):
                    field.extend(value)
                else:
                    setattr(config.dynamic_batching, key, value)
    for key, value in (parameters or {}).items():
        config.parameters[key].string_value = str(value)
    return config


def write_config(model_dir: Path, config: mc.ModelConfig) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / "config.pbtxt"
    path.write_text(text_format.MessageToString(config))
    return path


def _check_options(opts: dict[str, Any], extra: set[str]) -> None:
    unknown = set(opts) - _COMMON_OPTIONS - extra
    if unknown:
        raise TypeError(f"unknown toy-model options: {sorted(unknown)}")


def _config_options(opts: dict[str, Any]) -> dict[str, Any]:
    keys = ("max_batch_size", "dynamic_batching", "instance_count", "instance_kind")
    return {key: opts[key] for key in keys if key in opts}


# --------------------------------------------------------------------------------------------------
# python backend

_PY_HEADER = """\
import json
import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils


"""

_PY_IDENTITY = """\
class TritonPythonModel:
    def initialize(self, args):
        self.model_config = json.loads(args["model_config"])

    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", data)]))
        return responses
"""

# Shaped like the add_sub example of Triton's python-backend documentation.
_PY_ADD_SUB = """\
class TritonPythonModel:
    def initialize(self, args):
        self.model_config = model_config = json.loads(args["model_config"])
        output0_config = pb_utils.get_output_config_by_name(model_config, "OUTPUT0")
        output1_config = pb_utils.get_output_config_by_name(model_config, "OUTPUT1")
        self.output0_dtype = pb_utils.triton_string_to_numpy(output0_config["data_type"])
        self.output1_dtype = pb_utils.triton_string_to_numpy(output1_config["data_type"])

    def execute(self, requests):
        responses = []
        for request in requests:
            in_0 = pb_utils.get_input_tensor_by_name(request, "INPUT0")
            in_1 = pb_utils.get_input_tensor_by_name(request, "INPUT1")
            out_0, out_1 = (in_0.as_numpy() + in_1.as_numpy(), in_0.as_numpy() - in_1.as_numpy())
            out_tensor_0 = pb_utils.Tensor("OUTPUT0", out_0.astype(self.output0_dtype))
            out_tensor_1 = pb_utils.Tensor("OUTPUT1", out_1.astype(self.output1_dtype))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out_tensor_0, out_tensor_1]))
        return responses

    def finalize(self):
        pass
"""

_PY_STRINGS = """\
class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            upper = np.array([bytes(item).upper() for item in data.ravel()], dtype=np.object_)
            out = pb_utils.Tensor("OUTPUT0", upper.reshape(data.shape))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
"""

_PY_SLOW = """\
class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.delay_s = float(config["parameters"]["delay_ms"]["string_value"]) / 1000.0

    def execute(self, requests):
        time.sleep(self.delay_s)
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", data)]))
        return responses
"""

_PY_CRASH = """\
HOW = {how!r}


def _die():
    if HOW == "segfault":
        import ctypes

        ctypes.string_at(0)
    elif HOW == "kill":
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(3)


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            if np.any(data < 0):
                _die()
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", data)]))
        return responses
"""

_PY_INIT_FAILS = """\
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError({message!r})

    def execute(self, requests):
        return []
"""

_PY_EXECUTE_RAISES = """\
MODE = {mode!r}
MESSAGE = {message!r}


class TritonPythonModel:
    def execute(self, requests):
        if MODE == "raise":
            raise pb_utils.TritonModelException(MESSAGE)
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            if np.any(data < 0):
                error = pb_utils.TritonError(MESSAGE)
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
            else:
                out = pb_utils.Tensor("OUTPUT0", data)
                responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
"""


def write_python_model(repo: Path, name: str, kind: str, **opts: Any) -> Path:
    """Write a python-backend toy model (see the module docstring for kinds and options)."""
    if kind not in PYTHON_KINDS:
        raise ValueError(f"unknown python toy model kind {kind!r}; choose from {PYTHON_KINDS}")
    _check_options(opts, {"delay_ms", "how", "mode", "message"})
    dtype = opts.get("dtype", "TYPE_STRING" if kind == "strings" else "TYPE_FP32")
    dims = list(opts.get("dims", [-1]))
    parameters = dict(opts.get("parameters", {}))
    two_in_two_out = kind == "add_sub"
    inputs = [_tensor("INPUT0", dtype, dims)]
    outputs = [_tensor("OUTPUT0", dtype, dims)]
    if two_in_two_out:
        inputs.append(_tensor("INPUT1", dtype, dims))
        outputs.append(_tensor("OUTPUT1", dtype, dims))
    if kind == "slow":
        parameters.setdefault("delay_ms", str(opts.get("delay_ms", 100)))
    config = build_config(
        name, backend="python", inputs=inputs, outputs=outputs, parameters=parameters, **_config_options(opts)
    )
    body = {
        "identity": _PY_IDENTITY,
        "add_sub": _PY_ADD_SUB,
        "strings": _PY_STRINGS,
        "slow": _PY_SLOW,
        "crash": _PY_CRASH.format(how=opts.get("how", "exit")),
        "init_fails": _PY_INIT_FAILS.format(message=opts.get("message", INIT_FAILURE_MESSAGE)),
        "execute_raises": _PY_EXECUTE_RAISES.format(
            mode=opts.get("mode", "raise"), message=opts.get("message", EXECUTE_FAILURE_MESSAGE)
        ),
    }[kind]
    model_dir = repo / name
    write_config(model_dir, config)
    return write_python_source(model_dir, _PY_HEADER + body, version=opts.get("version", 1))


def write_python_source(model_dir: Path, source: str, version: int = 1) -> Path:
    """Write `model.py` of a python model whose source a test spells out itself."""
    version_dir = model_dir / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    (version_dir / "model.py").write_text(textwrap.dedent(source))
    return model_dir


# --------------------------------------------------------------------------------------------------
# ONNX

_ONNX_TYPES = {
    "TYPE_FP32": 1,
    "TYPE_UINT8": 2,
    "TYPE_INT8": 3,
    "TYPE_UINT16": 4,
    "TYPE_INT16": 5,
    "TYPE_INT32": 6,
    "TYPE_INT64": 7,
    "TYPE_STRING": 8,
    "TYPE_BOOL": 9,
    "TYPE_FP16": 10,
    "TYPE_FP64": 11,
    "TYPE_UINT32": 12,
    "TYPE_UINT64": 13,
    "TYPE_BF16": 16,
}


def write_one_step_ensemble(repo: Path, name: str, step: str, dims: list[int], *, extra: str = "") -> Path:
    """An ensemble `name` (max_batch_size 8, FP32 IN -> OUT) of one step: model `step`'s INPUT0 ->
    OUTPUT0; `extra` is appended to its config (e.g. a response_cache block)."""
    model_dir = repo / name
    (model_dir / "1").mkdir(parents=True)
    shape = ", ".join(str(dim) for dim in dims)
    (model_dir / "config.pbtxt").write_text(
        textwrap.dedent(
            f"""\
            name: "{name}"
            platform: "ensemble"
            max_batch_size: 8
            input [ {{ name: "IN", data_type: TYPE_FP32, dims: [ {shape} ] }} ]
            output [ {{ name: "OUT", data_type: TYPE_FP32, dims: [ {shape} ] }} ]
            ensemble_scheduling {{
              step [ {{
                model_name: "{step}"
                model_version: -1
                input_map {{ key: "INPUT0", value: "IN" }}
                output_map {{ key: "OUTPUT0", value: "OUT" }}
              }} ]
            }}
            """
        )
        + extra
    )
    return model_dir


def write_onnx_model(repo: Path, name: str, kind: str = "add_sub", **opts: Any) -> Path:
    """Write an ONNX toy model built with onnx.helper.

    identity: INPUT0 -> OUTPUT0; add_sub: INPUT0, INPUT1 -> OUTPUT0 (sum), OUTPUT1 (difference);
    mlp: INPUT0 FP32[in_features] -> OUTPUT0 FP32[out_features] through relu layers of sizes
    `hidden` (default 256 -> 1024 -> 1024 -> 10), weights from a fixed seed.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    if kind not in ONNX_KINDS:
        raise ValueError(f"unknown ONNX toy model kind {kind!r}; choose from {ONNX_KINDS}")
    _check_options(opts, {"in_features", "hidden", "out_features", "seed"})
    max_batch_size = int(opts.get("max_batch_size", 8))
    dtype = opts.get("dtype", "TYPE_FP32")
    if kind == "mlp":
        dtype = "TYPE_FP32"
        in_features = int(opts.get("in_features", 256))
        out_features = int(opts.get("out_features", 10))
        in_dims, out_dims = [in_features], [out_features]
    else:
        in_dims = out_dims = list(opts.get("dims", [-1]))

    def value_info(tensor_name: str, dims: list[int]) -> onnx.ValueInfoProto:
        shape: list[int | str] = [f"d{i}" if d < 0 else d for i, d in enumerate(dims)]
        if max_batch_size > 0:
            shape = ["batch", *shape]
        return helper.make_tensor_value_info(tensor_name, _ONNX_TYPES[dtype], shape)

    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    if kind == "identity":
        graph_inputs, graph_outputs = [value_info("INPUT0", in_dims)], [value_info("OUTPUT0", out_dims)]
        nodes.append(helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"]))
    elif kind == "add_sub":
        graph_inputs = [value_info("INPUT0", in_dims), value_info("INPUT1", in_dims)]
        graph_outputs = [value_info("OUTPUT0", out_dims), value_info("OUTPUT1", out_dims)]
        nodes.append(helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]))
        nodes.append(helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]))
    else:
        graph_inputs, graph_outputs = [value_info("INPUT0", in_dims)], [value_info("OUTPUT0", out_dims)]
        rng = np.random.default_rng(int(opts.get("seed", 0)))
        sizes = [in_dims[0], *list(opts.get("hidden", [1024, 1024])), out_dims[0]]
        previous = "INPUT0"
        for layer, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            weight = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
            initializers.append(numpy_helper.from_array(weight, f"w{layer}"))
            initializers.append(numpy_helper.from_array(np.zeros(fan_out, np.float32), f"b{layer}"))
            last = layer == len(sizes) - 2
            matmul, added = f"mm{layer}", "OUTPUT0" if last else f"add{layer}"
            nodes.append(helper.make_node("MatMul", [previous, f"w{layer}"], [matmul]))
            nodes.append(helper.make_node("Add", [matmul, f"b{layer}"], [added]))
            if not last:
                nodes.append(helper.make_node("Relu", [added], [f"relu{layer}"]))
                previous = f"relu{layer}"
    graph = helper.make_graph(nodes, name, graph_inputs, graph_outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # old enough for any onnxruntime we support
    onnx.checker.check_model(model)

    config = build_config(
        name,
        platform="onnxruntime_onnx",
        inputs=[_tensor(i.name, dtype, in_dims) for i in graph_inputs],
        outputs=[_tensor(o.name, dtype, out_dims) for o in graph_outputs],
        parameters=opts.get("parameters"),
        **_config_options(opts),
    )
    model_dir = repo / name
    write_config(model_dir, config)
    version_dir = model_dir / str(opts.get("version", 1))
    version_dir.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(version_dir / "model.onnx"))
    return model_dir


# --------------------------------------------------------------------------------------------------
# TorchScript


def write_torchscript_model(repo: Path, name: str, kind: str = "add_sub", **opts: Any) -> Path:
    """Write a TorchScript add_sub model (`model.pt`).

    naming="index" (default): config tensors INPUT__0, INPUT__1 -> OUTPUT__0, OUTPUT__1 (Triton's
    convention); naming="args": inputs named after forward()'s arguments `x`, `y`, outputs OUTPUT__0/1.
    """
    import torch

    if kind not in TORCHSCRIPT_KINDS:
        raise ValueError(f"unknown TorchScript toy model kind {kind!r}; choose from {TORCHSCRIPT_KINDS}")
    _check_options(opts, {"naming"})
    naming = opts.get("naming", "index")
    dtype = opts.get("dtype", "TYPE_FP32")
    dims = list(opts.get("dims", [-1]))
    module = torch.jit.script(_torch_add_sub(naming))
    input_names = ["x", "y"] if naming == "args" else ["INPUT__0", "INPUT__1"]
    config = build_config(
        name,
        platform="pytorch_libtorch",
        inputs=[_tensor(n, dtype, dims) for n in input_names],
        outputs=[_tensor(n, dtype, dims) for n in ("OUTPUT__0", "OUTPUT__1")],
        parameters=opts.get("parameters"),
        **_config_options(opts),
    )
    model_dir = repo / name
    write_config(model_dir, config)
    version_dir = model_dir / str(opts.get("version", 1))
    version_dir.mkdir(parents=True, exist_ok=True)
    torch.jit.save(module, str(version_dir / "model.pt"))
    return model_dir


def _torch_add_sub(naming: str) -> Any:
    """A fresh add/sub nn.Module; classes are defined here so importing this file skips torch."""
    import torch

    class AddSubIndex(torch.nn.Module):
        def forward(
            self, INPUT__0: torch.Tensor, INPUT__1: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            return INPUT__0 + INPUT__1, INPUT__0 - INPUT__1

    class AddSubArgs(torch.nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x + y, x - y

    return AddSubArgs() if naming == "args" else AddSubIndex()
