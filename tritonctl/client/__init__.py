"""Client-side helpers over tritonclient (HTTP and gRPC) for the CLI: connect, inspect, infer."""

from __future__ import annotations

from tritonctl.client.connection import (
    ConnectionFailed,
    InferAnswer,
    ModelSignature,
    OutputTensor,
    TensorSpec,
    TritonConnection,
    normalize_url,
)
from tritonctl.client.inputs import build_inputs, read_value, to_tensor

__all__ = [
    "ConnectionFailed",
    "InferAnswer",
    "ModelSignature",
    "OutputTensor",
    "TensorSpec",
    "TritonConnection",
    "build_inputs",
    "normalize_url",
    "read_value",
    "to_tensor",
]
