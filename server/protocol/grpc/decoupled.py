"""ModelStreamInfer for decoupled models: each response is written as the model sends it.

Like Triton: every response carries the parameter `triton_final_response` (false, and true on the
last); a flags-only final is written as an empty response only when the request set
`triton_enable_empty_final_response`; an error ends the request's responses with `error_message`.
Cancelling the gRPC stream cancels the request (the model's `is_cancelled()` turns true).
"""

from __future__ import annotations

import asyncio
import logging

from tritonclient.grpc import service_pb2 as pb

from server.errors import ServerError
from server.protocol.api import DataPlaneApi
from server.protocol.grpc.codec import (
    Chunk,
    decode_infer_request,
    parameter_value,
    serialize_infer_result,
    varint,
)
from server.protocol.request_log import REQUEST_LOG, grpc_status_name
from server.vocabulary.stream import ResponseStream
from server.vocabulary.types import InferenceResult

logger = logging.getLogger(__name__)
_STREAM_INFER_RESPONSE_FIELD = b"\x12"  # ModelStreamInferResponse.infer_response


def is_decoupled(dataplane: DataPlaneApi, request: pb.ModelInferRequest) -> bool:
    """A decoupled model, or an ensemble with a decoupled step (an unknown model: the one-response
    path reports the error)."""
    return dataplane.is_decoupled(request.model_name, request.model_version)


def _answer(result: InferenceResult, final: bool) -> list[Chunk]:
    if not final:
        result.parameters = {**result.parameters, "triton_final_response": False}
    chunks = serialize_infer_result(result, final)
    size = sum(len(chunk) for chunk in chunks)
    return [_STREAM_INFER_RESPONSE_FIELD + varint(size), *chunks]


def _error(message: str, request: pb.ModelInferRequest) -> list[Chunk]:
    error = pb.ModelStreamInferResponse(
        error_message=message, infer_response=pb.ModelInferResponse(id=request.id)
    )
    return [error.SerializeToString()]


async def stream_decoupled(
    dataplane: DataPlaneApi, request: pb.ModelInferRequest, answers: asyncio.Queue[list[Chunk] | None]
) -> None:
    empty_final = "triton_enable_empty_final_response" in request.parameters and bool(
        parameter_value(request.parameters["triton_enable_empty_final_response"])
    )
    stream = ResponseStream()
    try:
        infer_request, _ = decode_infer_request(request)
        tag = REQUEST_LOG.infer("gRPC stream", infer_request) if REQUEST_LOG.on else None
        dataplane.submit_stream(infer_request, stream)
    except ServerError as exc:
        if REQUEST_LOG.on:
            REQUEST_LOG.refused("gRPC stream", request.model_name, exc, grpc_status_name(exc))
        answers.put_nowait(_error(exc.message, request))
        return
    try:
        async for response, final in stream:
            if tag is not None:  # --log-verbose >= 1: each response of the stream
                REQUEST_LOG.streamed(tag, response, final)
            if isinstance(response, ServerError):
                answers.put_nowait(_error(response.message, request))
            elif response is not None:
                answers.put_nowait(_answer(response, final))
            elif empty_final:
                empty = InferenceResult(model=request.model_name, version=infer_request.version, outputs=[])
                empty.id = request.id
                answers.put_nowait(_answer(empty, True))
    except asyncio.CancelledError:
        stream.cancel()
        raise
    except Exception:
        logger.exception("unhandled error in a decoupled stream")
        stream.cancel()
