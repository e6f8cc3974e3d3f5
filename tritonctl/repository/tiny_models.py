"""Tiny, real model files for templates and examples, so `init` followed by `serve` works at once.

add/sub: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1 over FP32 tensors of shape
[batch, width]. onnx and torch are imported inside the builders (they are heavy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Old enough for every onnxruntime release still in use, new enough for Add/Sub with broadcasting.
ONNX_OPSET = 13
ONNX_IR_VERSION = 8


def build_onnx_add_sub(path: Path, width: int = 4) -> Path:
    """Write an ONNX add/sub graph whose first axis ("batch") is dynamic."""
    import onnx
    from onnx import TensorProto, helper

    shape: list[Any] = ["batch", width]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("INPUT0", "INPUT1")]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("OUTPUT0", "OUTPUT1")]
    nodes = [
        helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"], name="add"),
        helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"], name="sub"),
    ]
    graph = helper.make_graph(nodes, "add_sub", inputs, outputs)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], producer_name="tritonctl"
    )
    model.ir_version = ONNX_IR_VERSION
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def build_onnx_classifier(path: Path, features: int = 4, classes: int = 3, seed: int = 0) -> Path:
    """Write a small dense classifier: PROBABILITIES = softmax(INPUT0 @ W + b), batch axis dynamic."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = numpy_helper.from_array(rng.standard_normal((features, classes)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["INPUT0", "W"], ["logits_raw"]),
            helper.make_node("Add", ["logits_raw", "b"], ["LOGITS"]),
            helper.make_node("Softmax", ["LOGITS"], ["PROBABILITIES"], axis=-1),
        ],
        "classifier",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", features])],
        [
            helper.make_tensor_value_info("LOGITS", TensorProto.FLOAT, ["batch", classes]),
            helper.make_tensor_value_info("PROBABILITIES", TensorProto.FLOAT, ["batch", classes]),
        ],
        initializer=[weights, bias],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], producer_name="tritonctl"
    )
    model.ir_version = ONNX_IR_VERSION
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def build_torchscript_add_sub(path: Path) -> Path:
    """Write a scripted add/sub module: forward(INPUT__0, INPUT__1) -> (sum, difference)."""
    import torch

    class AddSub(torch.nn.Module):
        def forward(self, input0: torch.Tensor, input1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return input0 + input1, input0 - input1

    scripted: Any = torch.jit.script(AddSub())
    path.parent.mkdir(parents=True, exist_ok=True)
    save: Any = torch.jit.save
    save(scripted, str(path))
    return path
