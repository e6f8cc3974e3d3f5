"""gRPC fuzz cases: random and mutated protobuf bytes on every RPC of the service, and structured
`ModelInferRequest`s with random tensors, shapes, datatypes and parameters.

The verdict: an answer always comes (no deadline exceeded), and it is never INTERNAL or UNKNOWN
(those mean a bug: input mistakes are INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE, UNIMPLEMENTED).
Used by tests/fuzz/test_fuzz_grpc.py and benchmarks/fuzz_long.py.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import grpc
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb

from tests.fuzz.common import mutate_bytes
from tests.fuzz.http_cases import DATATYPES, MODELS, dims

SERVICE = "inference.GRPCInferenceService"
# Every unary RPC; the model-repository ones are refused in control mode none, so fuzzing them
# cannot change what the server serves.
UNARY_METHODS = tuple(
    name
    for name, method in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods_by_name.items()
    if not method.client_streaming
)
BAD_CODES = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED)


@dataclass
class GrpcCase:
    method: str  # RPC name; "ModelStreamInfer" is sent as one-message stream
    payload: bytes

    def __repr__(self) -> str:
        return f"GrpcCase({self.method!r}, {self.payload[:200]!r}{'...' if len(self.payload) > 200 else ''})"


_text = st.text(max_size=10)


@st.composite
def parameters(draw: st.DrawFn, keys: list[str]) -> dict[str, pb.InferParameter]:
    result: dict[str, pb.InferParameter] = {}
    for key in draw(st.lists(st.sampled_from(keys) | _text, max_size=3)):
        choice = draw(st.integers(0, 4))
        if choice == 0:
            result[key] = pb.InferParameter(bool_param=draw(st.booleans()))
        elif choice == 1:
            result[key] = pb.InferParameter(int64_param=draw(st.integers(-(2**63), 2**63 - 1)))
        elif choice == 2:
            result[key] = pb.InferParameter(string_param=draw(_text))
        elif choice == 3:
            result[key] = pb.InferParameter(double_param=draw(st.floats()))
        else:
            result[key] = pb.InferParameter(uint64_param=draw(st.integers(0, 2**64 - 1)))
    return result


@st.composite
def infer_requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(
        model_name=draw(st.sampled_from(MODELS) | _text),
        model_version=draw(st.sampled_from(["", "", "1", "2", "-1", "x"])),
        id=draw(_text),
    )
    for key, value in draw(parameters(["priority", "timeout", "binary_data_output", "sequence_id"])).items():
        request.parameters[key].CopyFrom(value)
    raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 3))):
        tensor = request.inputs.add(
            name=draw(st.sampled_from(["INPUT0", "INPUT1"]) | _text),
            datatype=draw(st.sampled_from(DATATYPES) | _text),
            shape=[max(min(d, 2**63 - 1), -(2**63)) for d in draw(st.lists(dims, max_size=4))],
        )
        for key, value in draw(parameters(["shared_memory_region", "binary_data_size"])).items():
            tensor.parameters[key].CopyFrom(value)
        if raw:
            if tensor.datatype == "BYTES" and draw(st.booleans()):
                elements = draw(st.lists(st.binary(max_size=5), max_size=4))
                data = b"".join(struct.pack("<I", len(e)) + e for e in elements)
            else:
                data = draw(st.binary(max_size=64))
            request.raw_input_contents.append(data)
        else:
            contents = tensor.contents
            which = draw(st.integers(0, 4))
            if which == 0:
                contents.fp32_contents.extend(draw(st.lists(st.floats(width=32), max_size=8)))
            elif which == 1:
                contents.int_contents.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=8)))
            elif which == 2:
                contents.bytes_contents.extend(draw(st.lists(st.binary(max_size=6), max_size=4)))
            elif which == 3:
                contents.bool_contents.extend(draw(st.lists(st.booleans(), max_size=8)))
    if raw and draw(st.integers(0, 5)) == 0:
        request.raw_input_contents.append(draw(st.binary(max_size=8)))  # one entry too many
    for _ in range(draw(st.integers(0, 2))):
        output = request.outputs.add(name=draw(st.sampled_from(["OUTPUT0", "OUTPUT1"]) | _text))
        for key, value in draw(parameters(["classification", "binary_data", "shared_memory_region"])).items():
            output.parameters[key].CopyFrom(value)
    return request


@st.composite
def grpc_cases(draw: st.DrawFn) -> GrpcCase:
    kind = draw(st.integers(0, 3))
    if kind == 0:  # random bytes on a random RPC
        return GrpcCase(draw(st.sampled_from(UNARY_METHODS)), draw(st.binary(max_size=120)))
    serialized = draw(infer_requests()).SerializeToString()
    method = "ModelStreamInfer" if draw(st.integers(0, 5)) == 0 else "ModelInfer"
    if kind == 1:  # a structured request, as it is
        return GrpcCase(method, serialized)
    return GrpcCase(method, mutate_bytes(draw, serialized, 6))  # mutated bytes of one


def call(channel: grpc.Channel, case: GrpcCase, timeout: float = 20.0) -> tuple[grpc.StatusCode, str, Any]:
    """(status code, details, stream error_message or None) of one call with raw bytes."""
    path = f"/{SERVICE}/{case.method}"
    try:
        if case.method == "ModelStreamInfer":
            stream = channel.stream_stream(path, request_serializer=None, response_deserializer=None)
            answers = list(stream(iter([case.payload]), timeout=timeout))
            messages = [pb.ModelStreamInferResponse.FromString(a).error_message for a in answers]
            return grpc.StatusCode.OK, "", messages
        channel.unary_unary(path, request_serializer=None, response_deserializer=None)(
            case.payload, timeout=timeout
        )
        return grpc.StatusCode.OK, "", None
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or "", None


def check(case: GrpcCase, outcome: tuple[grpc.StatusCode, str, Any]) -> None:
    code, details, stream_errors = outcome
    assert code not in BAD_CODES, f"{code} for {case!r}: {details}"
    for message in stream_errors or []:
        assert not message.startswith("internal error"), f"stream error for {case!r}: {message}"
