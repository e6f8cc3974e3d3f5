"""gRPC `ModelInferRequest` / `ModelInferResponse` <-> InferenceRequest / InferenceResult.

Inputs come as `raw_input_contents` (one entry per input, what tritonclient and perf_analyzer
send) or as typed `contents`; outputs always go back as `raw_output_contents`, like Triton.

Answers are serialized by hand (`serialize_infer_result`): the protobuf wire format of
ModelInferResponse is a few length-delimited fields, and writing them directly skips building
message objects per request and lets output tensors go to the socket as they are, uncopied (a
600 KB image would otherwise be copied into the message and again into its serialization).
Rare fields (parameters) are serialized by protobuf and appended: concatenated protobuf
encodings parse as one merged message.
"""

from __future__ import annotations

from typing import Any

from tritonclient.grpc import service_pb2

from server.errors import InvalidInput
from server.protocol.shm_tensors import (
    DISABLED,
    OutputTargets,
    add_output_target,
    names_shared_memory,
    region_input,
)
from server.protocol.tensor_codec import check_datatype, contents_to_bytes
from server.vocabulary.shm_regions import REGION, RegionTable
from server.vocabulary.types import InferenceRequest, InferenceResult, RequestedOutput, Tensor

Chunk = bytes | bytearray | memoryview

InferParameter = service_pb2.InferParameter


def parameter_value(parameter: service_pb2.InferParameter) -> Any:
    choice = parameter.WhichOneof("parameter_choice")
    return None if choice is None else getattr(parameter, choice)


def parameters_to_dict(parameters: Any) -> dict[str, Any]:
    return {key: parameter_value(value) for key, value in parameters.items()}


def set_parameter(target: service_pb2.InferParameter, value: Any) -> None:
    if isinstance(value, bool):
        target.bool_param = value
    elif isinstance(value, int):
        if value >= 1 << 63:
            target.uint64_param = value
        else:
            target.int64_param = value
    elif isinstance(value, float):
        target.double_param = value
    else:
        target.string_param = str(value)


def decode_infer_request(
    message: service_pb2.ModelInferRequest,
    regions: RegionTable = DISABLED,
    shm_outputs: OutputTargets | None = None,
) -> tuple[InferenceRequest, dict[str, int]]:
    """The protocol-free request, plus the outputs that asked for classification (name -> k).

    Inputs in shared memory are read from `regions`; outputs asked into it get their targets in
    `shm_outputs` (refused when it is None)."""
    model = message.model_name
    raw_contents = message.raw_input_contents
    if raw_contents and len(raw_contents) != len(message.inputs):
        # Inputs in shared memory have no raw_input_contents entry (tritonclient sends none).
        expected = sum(REGION not in tensor.parameters for tensor in message.inputs)
        if len(raw_contents) != expected:
            raise InvalidInput(
                f"expected {expected} entries in raw_input_contents for model '{model}', "
                f"got {len(raw_contents)}"
            )
    inputs: list[Tensor] = []
    seen: set[str] = set()
    index = -1
    for tensor in message.inputs:
        name = tensor.name
        if name in seen:
            raise InvalidInput(f"input '{name}' already exists in request")
        seen.add(name)
        parameters = parameters_to_dict(tensor.parameters) if tensor.parameters else {}
        check_datatype(tensor.datatype, name)
        if parameters and names_shared_memory(parameters):
            if tensor.HasField("contents") and tensor.contents.ListFields():
                raise InvalidInput(
                    f"input '{name}' for model '{model}' sets both 'contents' and "
                    "'shared_memory_region': send one of them"
                )
            shm_data, source = region_input(regions, parameters, name, tensor.datatype)
            inputs.append(Tensor(name, tensor.datatype, list(tensor.shape), shm_data, parameters, source))
            continue
        if raw_contents:
            index += 1
            if tensor.HasField("contents") and tensor.contents.ListFields():
                raise InvalidInput(
                    f"contents field must not be specified when using raw_input_contents for '{name}' "
                    f"for model '{model}'"
                )
            data: bytes = raw_contents[index]
        else:
            converted = contents_to_bytes(tensor.datatype, tensor.contents, name, model)
            if converted is None:
                raise InvalidInput(
                    f"unable to find data for input tensor '{name}' for model '{model}' in request."
                )
            data = converted
        inputs.append(Tensor(name, tensor.datatype, list(tensor.shape), data, parameters))

    outputs: list[RequestedOutput] = []
    classification: dict[str, int] = {}
    for output in message.outputs:
        parameters = parameters_to_dict(output.parameters) if output.parameters else {}
        if parameters and names_shared_memory(parameters):
            targets = shm_outputs if shm_outputs is not None else {}
            add_output_target(regions, targets, parameters, output.name)
        count = parameters.get("classification")
        if count is not None:
            if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
                raise InvalidInput(f"'classification' of output '{output.name}' must be a positive integer")
            classification[output.name] = count
        outputs.append(RequestedOutput(output.name, parameters))
    request = InferenceRequest(
        model=model,
        version=message.model_version,
        inputs=inputs,
        outputs=outputs,
        id=message.id,
        parameters=parameters_to_dict(message.parameters) if message.parameters else {},
    )
    return request, classification


def varint(value: int) -> bytes:
    if value < 0x80:
        return _SMALL_VARINTS[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL_VARINTS = [bytes([n]) for n in range(0x80)]
# Field tags (field number << 3 | wire type 2, length-delimited) of ModelInferResponse and
# of its InferOutputTensor.
_MODEL_NAME, _MODEL_VERSION, _ID, _OUTPUTS, _RAW_OUTPUT = b"\x0a", b"\x12", b"\x1a", b"\x2a", b"\x32"
_TENSOR_NAME, _TENSOR_DATATYPE, _TENSOR_SHAPE = b"\x0a", b"\x12", b"\x1a"
_HEADS: dict[tuple[Any, ...], bytes] = {}  # serialized fields before the output bytes, by layout


def _text_field(tag: bytes, text: str) -> bytes:
    raw = text.encode()
    return tag + varint(len(raw)) + raw


def _output_tensor(tensor: Tensor) -> bytes:
    if tensor.parameters:  # rare: let protobuf write the map
        message = service_pb2.ModelInferResponse.InferOutputTensor(
            name=tensor.name, datatype=tensor.datatype, shape=tensor.shape
        )
        for key, value in tensor.parameters.items():
            set_parameter(message.parameters[key], value)
        body = bytes(message.SerializeToString())
    else:
        shape = b"".join(varint(dim) if dim >= 0 else varint(dim + (1 << 64)) for dim in tensor.shape)
        body = _text_field(_TENSOR_NAME, tensor.name) + _text_field(_TENSOR_DATATYPE, tensor.datatype)
        if shape:
            body += _TENSOR_SHAPE + varint(len(shape)) + shape
    return _OUTPUTS + varint(len(body)) + body


def _head(result: InferenceResult) -> bytes:
    """model_name, model_version and the outputs' descriptions, cached by their layout."""
    cacheable = not any(tensor.parameters for tensor in result.outputs)
    key: tuple[Any, ...] = ()
    if cacheable:
        key = (result.model, result.version, *((t.name, t.datatype, *t.shape) for t in result.outputs))
        head = _HEADS.get(key)
        if head is not None:
            return head
    head = _text_field(_MODEL_NAME, result.model) + _text_field(_MODEL_VERSION, result.version)
    head += b"".join(_output_tensor(tensor) for tensor in result.outputs)
    if cacheable:
        if len(_HEADS) >= 512:
            _HEADS.clear()
        _HEADS[key] = head
    return head


def serialize_infer_result(result: InferenceResult, final_response_flag: bool = False) -> list[Chunk]:
    """The serialized ModelInferResponse as chunks: fields, then each output's bytes uncopied."""
    head = _head(result)
    if result.id:
        head += _text_field(_ID, result.id)
    if result.parameters or final_response_flag:
        extra = service_pb2.ModelInferResponse()
        for key, value in result.parameters.items():
            set_parameter(extra.parameters[key], value)
        if final_response_flag:
            extra.parameters["triton_final_response"].bool_param = True
        head += extra.SerializeToString()
    chunks: list[Chunk] = [head]
    for tensor in result.outputs:
        data = tensor.data
        size = data.nbytes if isinstance(data, memoryview) else len(data)
        chunks.append(_RAW_OUTPUT + varint(size))
        if size:
            chunks.append(data)
    return chunks
