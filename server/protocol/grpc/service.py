"""`inference.GRPCInferenceService`: the one implementation of every RPC, for both gRPC stacks.

Each RPC is `async def Name(request) -> response` on protobuf messages (ModelStreamInfer: an async
iterator of requests -> one of responses) and raises on failure; it knows nothing of the transport.
grpc.aio (guard.py) and our lean HTTP/2 server (h2server.py) call the same methods and turn the
exceptions into gRPC statuses with `grpc_status`. The two inference RPCs answer already serialized
chunks (`PRESERIALIZED`): outputs go out uncopied, and neither stack parses them back.
Trace and logging answer UNIMPLEMENTED; shared memory goes to the region tables (shm_rpcs.py).
`METHODS` describes every RPC from the service descriptor.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from tritonclient.grpc import service_pb2 as pb

from server.errors import DecoupledUnsupported, ServerError, Unsupported
from server.protocol.api import DataPlaneApi
from server.protocol.grpc.codec import (
    Chunk,
    decode_infer_request,
    parameter_value,
    serialize_infer_result,
    varint,
)
from server.protocol.grpc.decoupled import is_decoupled, stream_decoupled
from server.protocol.grpc.shm_rpcs import SharedMemoryRpcs
from server.protocol.log_settings import LOG_CONTROL
from server.protocol.request_log import REQUEST_LOG, grpc_status_name, logged_rpc
from server.protocol.shm_tensors import (
    DISABLED,
    OutputTargets,
    cuda_table,
    enable_direct_writes,
    release,
    write_outputs,
)
from server.protocol.tensor_codec import classify_outputs
from server.vocabulary.shm_regions import RegionTable
from server.vocabulary.types import InferenceResult

logger = logging.getLogger(__name__)

SERVICE_NAME = "inference.GRPCInferenceService"
UNKNOWN, INTERNAL = 2, 13
# RPCs whose methods return list[Chunk] (the serialized response) instead of a message.
PRESERIALIZED = frozenset({"ModelInfer", "ModelStreamInfer"})
_STREAM_INFER_RESPONSE_FIELD = b"\x12"  # ModelStreamInferResponse.infer_response: field 2, length-delimited


@dataclass(frozen=True, slots=True)
class Method:
    """One RPC of the service: its name, message classes and shape."""

    name: str
    request_type: Any
    response_type: Any
    streaming: bool  # bidirectional (ModelStreamInfer); every other RPC is unary


@dataclass(slots=True)
class InferCall:
    """A queued inference: its result's future, and the outputs that asked for classification."""

    future: asyncio.Future[InferenceResult]
    classification: dict[str, int]
    shm_outputs: OutputTargets = field(default_factory=dict)  # outputs asked into shared memory
    log_tag: str | None = None  # --log-verbose >= 1: how the request log names it (request_log.py)


def _methods() -> dict[str, Method]:
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    return {
        name: Method(
            name,
            getattr(pb, method.input_type.name),
            getattr(pb, method.output_type.name),
            method.client_streaming or method.server_streaming,
        )
        for name, method in service.methods_by_name.items()
    }


METHODS = _methods()


def log_settings_response(settings: dict[str, Any]) -> pb.LogSettingsResponse:
    """Triton's LogSettingsResponse: booleans, the verbose level as uint32, strings."""
    response = pb.LogSettingsResponse()
    for key, value in settings.items():
        entry = response.settings[key]
        if isinstance(value, bool):
            entry.bool_param = value
        elif isinstance(value, int):
            entry.uint32_param = value
        else:
            entry.string_param = str(value)
    return response


def grpc_status(error: BaseException) -> tuple[int, str]:
    """(gRPC status code, message) for an exception an RPC raised; unexpected ones are logged."""
    if isinstance(error, ServerError):
        if isinstance(error, DecoupledUnsupported):
            return int(error.grpc_code.value[0]), error.GRPC_MESSAGE
        return int(error.grpc_code.value[0]), error.message
    logger.exception("unhandled error in a gRPC call", exc_info=error)
    return INTERNAL, f"internal error: {type(error).__name__}: {error}"


class InferenceRpcs(SharedMemoryRpcs):
    """Every RPC of the service over the DataPlane; failures raise (see grpc_status)."""

    def __init__(
        self,
        dataplane: DataPlaneApi,
        regions: RegionTable | None = None,
    ) -> None:
        self.dataplane = dataplane
        # Client shared memory (vocabulary/shm_regions.py, cuda_regions.py): the server's tables,
        # shared with HTTP; without them it is refused.
        self.regions = regions if regions is not None else DISABLED
        self.cuda_regions = cuda_table(self.regions)
        for name, method in METHODS.items():  # both stacks look RPCs up on this object
            if name not in PRESERIALIZED and not method.streaming:
                setattr(self, name, logged_rpc(name, getattr(self, name)))

    # -- health and metadata ---------------------------------------------------------------------
    async def ServerLive(self, request: pb.ServerLiveRequest) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.dataplane.live())

    async def ServerReady(self, request: pb.ServerReadyRequest) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.dataplane.ready())

    async def ModelReady(self, request: pb.ModelReadyRequest) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.dataplane.model_ready(request.name, request.version))

    async def ServerMetadata(self, request: pb.ServerMetadataRequest) -> pb.ServerMetadataResponse:
        metadata = self.dataplane.server_metadata()
        return pb.ServerMetadataResponse(
            name=metadata.get("name", ""),
            version=metadata.get("version", ""),
            extensions=metadata.get("extensions", []),
        )

    async def ModelMetadata(self, request: pb.ModelMetadataRequest) -> pb.ModelMetadataResponse:
        metadata = self.dataplane.model_metadata(request.name, request.version)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=metadata.name,
            versions=list(metadata.versions),
            platform=metadata.platform,
            inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in metadata.inputs],
            outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in metadata.outputs],
        )

    async def ModelConfig(self, request: pb.ModelConfigRequest) -> pb.ModelConfigResponse:
        return pb.ModelConfigResponse(config=self.dataplane.model_config(request.name, request.version))

    async def ModelStatistics(self, request: pb.ModelStatisticsRequest) -> pb.ModelStatisticsResponse:
        return self.dataplane.model_statistics(request.name, request.version)

    # -- inference -------------------------------------------------------------------------------
    def start_infer(self, request: pb.ModelInferRequest) -> InferCall:
        """Decode and queue a request (the hot path: no coroutine); errors before queueing raise."""
        shm_outputs: OutputTargets = {}
        try:
            infer_request, classification = decode_infer_request(request, self.regions, shm_outputs)
            if shm_outputs:
                enable_direct_writes(shm_outputs, self.dataplane, infer_request.model, infer_request.version)
            tag = REQUEST_LOG.infer("gRPC", infer_request) if REQUEST_LOG.on else None
            return InferCall(self.dataplane.submit(infer_request), classification, shm_outputs, tag)
        except BaseException as exc:
            release(shm_outputs.values())
            if REQUEST_LOG.on:
                REQUEST_LOG.refused("gRPC", request.model_name, exc, grpc_status_name(exc))
            raise

    def finish_infer(self, call: InferCall, final_flag: bool = False) -> list[Chunk]:
        """The serialized answer of a settled call (raises its error)."""
        try:
            result = call.future.result()
            if call.classification:
                batched = self.dataplane.model_config(result.model, result.version).max_batch_size > 0
                labels = self.dataplane.output_labels(result.model, result.version)
                classify_outputs(result, call.classification, batched, labels)
            if call.shm_outputs:
                write_outputs(result, call.shm_outputs)  # their raw_output_contents stay empty
        except BaseException as exc:
            if call.log_tag is not None:
                REQUEST_LOG.failed(call.log_tag, exc, grpc_status_name(exc))
            raise
        finally:
            if call.shm_outputs:
                release(call.shm_outputs.values())
        if call.log_tag is not None:
            REQUEST_LOG.answered(call.log_tag, result, "OK")
        return serialize_infer_result(result, final_flag)

    async def ModelInfer(self, request: pb.ModelInferRequest) -> list[Chunk]:
        """The grpc.aio route (h2server.py calls start_infer/finish_infer without a coroutine)."""
        call = self.start_infer(request)
        await call.future
        return self.finish_infer(call)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest]
    ) -> AsyncIterator[list[Chunk]]:
        """Requests of one stream run concurrently; each serialized answer is written when it is ready.

        Errors travel in `error_message` and the stream goes on, like Triton. Decoupled models
        (several answers per request) are answered by decoupled.py.
        """
        if REQUEST_LOG.on:  # each request of the stream is logged as it comes (start_infer, decoupled.py)
            REQUEST_LOG.request("gRPC", "ModelStreamInfer")
        answers: asyncio.Queue[list[Chunk] | None] = asyncio.Queue()
        reader = asyncio.ensure_future(self._read_stream(request_iterator, answers))
        try:
            while (answer := await answers.get()) is not None:
                yield answer
        finally:
            if not reader.done():
                reader.cancel()

    async def _read_stream(
        self,
        request_iterator: AsyncIterator[pb.ModelInferRequest],
        answers: asyncio.Queue[list[Chunk] | None],
    ) -> None:
        tasks: set[asyncio.Task[None]] = set()
        try:
            async for request in request_iterator:
                task = asyncio.ensure_future(self._stream_one(request, answers))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            answers.put_nowait(None)

    async def _stream_one(
        self, request: pb.ModelInferRequest, answers: asyncio.Queue[list[Chunk] | None]
    ) -> None:
        if is_decoupled(self.dataplane, request):  # 0..N responses per request (decoupled.py)
            await stream_decoupled(self.dataplane, request, answers)
            return
        try:
            call = self.start_infer(request)
            await call.future
            chunks = self.finish_infer(call, final_flag=True)
        except Exception as exc:
            if not isinstance(exc, ServerError):
                logger.exception("unhandled error in a streamed inference")
            error = pb.ModelStreamInferResponse(
                error_message=str(exc), infer_response=pb.ModelInferResponse(id=request.id)
            )
            answers.put_nowait([error.SerializeToString()])
            return
        size = sum(len(chunk) for chunk in chunks)
        answers.put_nowait([_STREAM_INFER_RESPONSE_FIELD + varint(size), *chunks])

    # -- repository ------------------------------------------------------------------------------
    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest) -> pb.RepositoryIndexResponse:
        entry = pb.RepositoryIndexResponse.ModelIndex
        return pb.RepositoryIndexResponse(
            models=[
                entry(name=e.name, version=e.version, state=e.state, reason=e.reason)
                for e in self.dataplane.repository_index(request.ready)
            ]
        )

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest
    ) -> pb.RepositoryModelLoadResponse:
        config: str | None = None
        files: dict[str, bytes] = {}
        for key, parameter in request.parameters.items():
            value = parameter_value(parameter)
            if key == "config":
                config = value if isinstance(value, str) else None
            elif key.startswith("file:"):
                files[key] = value if isinstance(value, bytes) else str(value).encode()
        await self.dataplane.load_model(request.model_name, config, files or None)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest
    ) -> pb.RepositoryModelUnloadResponse:
        dependents = request.parameters.get("unload_dependents")
        unload_dependents = bool(parameter_value(dependents)) if dependents is not None else False
        await self.dataplane.unload_model(request.model_name, unload_dependents)
        return pb.RepositoryModelUnloadResponse()

    # -- extensions we do not offer --------------------------------------------------------------
    async def TraceSetting(self, request: Any) -> Any:
        raise Unsupported("the trace extension is not supported by this server")

    async def LogSettings(self, request: pb.LogSettingsRequest) -> pb.LogSettingsResponse:
        """Triton's logging extension (log_settings.py): the settings, after applying any sent."""
        if request.settings:
            LOG_CONTROL.update(
                {
                    key: getattr(value, value.WhichOneof("parameter_choice") or "", None)
                    for key, value in request.settings.items()
                }
            )
        return log_settings_response(LOG_CONTROL.as_dict())
