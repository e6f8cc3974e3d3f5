"""gRPC `ModelInferRequest` / `ModelInferResponse` <-> InferenceRequest / InferenceResult.

Inputs come as `raw_input_contents` (one entry per input, what tritonclient and perf_analyzer
send) or as typed `contents`; outputs always go back as `raw_output_contents`, like Triton.
"""

from __future__ import annotations

from typing import Any

from tritonclient.grpc import service_pb2

from server.core.types import InferenceRequest, InferenceResult, RequestedOutput, Tensor
from server.errors import InvalidInput, Unsupported
from server.protocol.tensor_codec import check_datatype, contents_to_bytes

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


def decode_infer_request(message: service_pb2.ModelInferRequest) -> tuple[InferenceRequest, dict[str, int]]:
    """The protocol-free request, plus the outputs that asked for classification (name -> k)."""
    model = message.model_name
    raw_contents = message.raw_input_contents
    if raw_contents and len(raw_contents) != len(message.inputs):
        raise InvalidInput(
            f"expected {len(message.inputs)} entries in raw_input_contents for model '{model}', "
            f"got {len(raw_contents)}"
        )
    inputs: list[Tensor] = []
    seen: set[str] = set()
    for index, tensor in enumerate(message.inputs):
        name = tensor.name
        if name in seen:
            raise InvalidInput(f"input '{name}' already exists in request")
        seen.add(name)
        parameters = parameters_to_dict(tensor.parameters) if tensor.parameters else {}
        if "shared_memory_region" in parameters:
            raise Unsupported(
                f"input '{name}' uses shared memory ('shared_memory_region'): "
                "the shared-memory extension is not supported by this server; send the data in the request"
            )
        check_datatype(tensor.datatype, name)
        if raw_contents:
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
        if "shared_memory_region" in parameters:
            raise Unsupported(
                f"output '{output.name}' asks for shared memory: the shared-memory extension is not supported"
            )
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


def encode_infer_result(
    result: InferenceResult, final_response_flag: bool = False
) -> service_pb2.ModelInferResponse:
    response = service_pb2.ModelInferResponse(
        model_name=result.model,
        model_version=result.version,
        id=result.id,
        outputs=[
            service_pb2.ModelInferResponse.InferOutputTensor(
                name=tensor.name, datatype=tensor.datatype, shape=tensor.shape
            )
            for tensor in result.outputs
        ],
        raw_output_contents=[
            tensor.data if isinstance(tensor.data, bytes) else bytes(tensor.data) for tensor in result.outputs
        ],
    )
    for tensor, output in zip(result.outputs, response.outputs, strict=True):
        for key, value in tensor.parameters.items():
            set_parameter(output.parameters[key], value)
    for key, value in result.parameters.items():
        set_parameter(response.parameters[key], value)
    if final_response_flag:
        response.parameters["triton_final_response"].bool_param = True
    return response
