"""The hand-written ModelInferResponse serializer against protobuf's own, field by field."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from server.protocol.grpc.codec import serialize_infer_result, set_parameter
from server.vocabulary.types import InferenceResult, Tensor


def reference(result: InferenceResult, final: bool) -> service_pb2.ModelInferResponse:
    """The straightforward protobuf construction the serializer replaces."""
    response = service_pb2.ModelInferResponse(
        model_name=result.model, model_version=result.version, id=result.id
    )
    for tensor in result.outputs:
        output = response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        for key, value in tensor.parameters.items():
            set_parameter(output.parameters[key], value)
        response.raw_output_contents.append(bytes(tensor.data))
    for key, value in result.parameters.items():
        set_parameter(response.parameters[key], value)
    if final:
        response.parameters["triton_final_response"].bool_param = True
    return response


CASES = [
    InferenceResult("m", "1", [Tensor("OUT", "FP32", [1, 16], np.arange(16, dtype=np.float32).tobytes())]),
    InferenceResult(
        "model_x",
        "12",
        [
            Tensor("A", "BYTES", [2], b"\x01\x00\x00\x00a\x01\x00\x00\x00b"),
            Tensor("B", "INT64", [0, 3], b""),
            Tensor("C", "FP32", [], b"abcd", {"p": 1, "q": "x"}),
        ],
        "req-1",
        {"z": True, "big": 2**63 + 5, "neg": -3, "f": 1.5, "s": "text"},
    ),
    InferenceResult(
        "m" * 300, "1", [Tensor("OUT", "UINT8", [1, 3, 224, 224], memoryview(bytearray(150528)))]
    ),
    InferenceResult("m", "1", []),
]


@pytest.mark.parametrize("final", [False, True])
@pytest.mark.parametrize(
    "result", CASES, ids=["identity", "parameters-bytes-empty", "large-view", "no-outputs"]
)
def test_serialized_answer_parses_to_the_reference_message(result: InferenceResult, final: bool) -> None:
    for _ in range(2):  # the second pass takes the cached head
        chunks = serialize_infer_result(result, final)
        parsed = service_pb2.ModelInferResponse.FromString(b"".join(chunks))
        assert parsed == reference(result, final)


def test_large_outputs_are_not_copied() -> None:
    data = memoryview(bytearray(1 << 20))
    chunks = serialize_infer_result(InferenceResult("m", "1", [Tensor("OUT", "UINT8", [1 << 20], data)]))
    assert any(chunk is data for chunk in chunks)


def test_the_layout_cache_keys_on_shape() -> None:
    small = InferenceResult("m", "1", [Tensor("OUT", "FP32", [1, 2], b"\x00" * 8)])
    large = InferenceResult("m", "1", [Tensor("OUT", "FP32", [1, 4], b"\x00" * 16)])
    for result in (small, large, small):
        parsed = service_pb2.ModelInferResponse.FromString(b"".join(serialize_infer_result(result)))
        assert list(parsed.outputs[0].shape) == result.outputs[0].shape
