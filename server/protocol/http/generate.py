"""Triton's generate extension: POST /v2/models/{m}[/versions/{v}]/generate and /generate_stream.

Request: one JSON object. A top-level key naming a model input becomes that tensor (a scalar or a
list, typed by the config; a batching model gets a batch of one); `parameters` (an object) and every
other key become request parameters. Response: one JSON object per model response,
`{"model_name", "model_version", <output>: value...}` (an output of one element is a scalar, BYTES
as text). `/generate` answers exactly one (a decoupled model must send exactly one);
`/generate_stream` writes each response as a server-sent event `data: {...}\\n\\n` as soon as the
model sends it; an error after the first event is an event `data: {"error": "..."}`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from tritonclient.grpc import model_config_pb2

from server.errors import InvalidInput, ServerError
from server.protocol.api import DataPlaneApi
from server.protocol.tensor_codec import bytes_to_json, json_to_bytes
from server.vocabulary.dtypes import config_to_wire
from server.vocabulary.stream import ResponseStream
from server.vocabulary.types import InferenceRequest, InferenceResult, Tensor

EVENT_STREAM = "text/event-stream; charset=utf-8"


def decode_generate_request(
    dataplane: DataPlaneApi, model: str, version: str, body: bytes | bytearray
) -> InferenceRequest:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"failed to parse the request JSON buffer: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidInput("the generate request must be a JSON object")
    config = dataplane.model_config(model, version)
    batched = config.max_batch_size > 0
    inputs: list[Tensor] = []
    parameters: dict[str, Any] = {}
    by_name = {tensor.name: tensor for tensor in config.input}
    for key, value in document.items():
        spec = by_name.get(key)
        if spec is None:
            if key == "parameters" and isinstance(value, dict):
                parameters.update(value)
            elif key != "id":
                parameters[key] = value
            continue
        datatype = config_to_wire(model_config_pb2.DataType.Name(spec.data_type))
        values = value if isinstance(value, list) else [value]
        shape = [len(values)]
        if batched:
            shape = [1, *shape]
        inputs.append(Tensor(key, datatype, shape, json_to_bytes(datatype, shape, values, key)))
    for key, value in parameters.items():
        if not isinstance(value, str | int | float | bool):
            raise InvalidInput(f"generate parameter '{key}' must be a string, number or boolean")
    return InferenceRequest(
        model=model, version=version, inputs=inputs, id=str(document.get("id", "")), parameters=parameters
    )


def response_json(result: InferenceResult) -> dict[str, Any]:
    answer: dict[str, Any] = {"model_name": result.model, "model_version": result.version}
    if result.id:
        answer["id"] = result.id
    for tensor in result.outputs:
        values = bytes_to_json(tensor.datatype, tensor.data, tensor.name)
        answer[tensor.name] = values[0] if len(values) == 1 else values
    return answer


async def generate_once(dataplane: DataPlaneApi, request: InferenceRequest) -> dict[str, Any]:
    """The one response of /generate."""
    stream = ResponseStream()
    dataplane.submit_stream(request, stream)
    answers: list[InferenceResult] = []
    try:
        async for response, _final in stream:
            if isinstance(response, ServerError):
                raise response
            if response is not None:
                answers.append(response)
    except BaseException:
        stream.cancel()
        raise
    if len(answers) != 1:
        raise InvalidInput(
            f"generate expects exactly one response from model '{request.model}', got {len(answers)}: "
            "use generate_stream"
        )
    return response_json(answers[0])


async def generate_events(dataplane: DataPlaneApi, stream: ResponseStream) -> AsyncIterator[bytes]:
    """Each response as a server-sent event; the client going away cancels the request."""
    try:
        async for response, _final in stream:
            if isinstance(response, ServerError):
                yield b"data: " + orjson.dumps({"error": response.message}) + b"\n\n"
            elif response is not None:
                yield b"data: " + orjson.dumps(response_json(response)) + b"\n\n"
    finally:
        if not stream.finished:
            stream.cancel()
