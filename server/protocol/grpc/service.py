"""`inference.GRPCInferenceService` on grpc.aio, from tritonclient's generated stubs.

Every RPC maps ServerError to its gRPC status (server/errors.py) by setting the code and details
on the context and returning an empty message, which is cheaper than `context.abort` (no
exception unwinds through grpc). Shared memory, trace and logging answer UNIMPLEMENTED.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from server.errors import ServerError, Unsupported
from server.protocol.api import DataPlaneApi
from server.protocol.grpc.codec import decode_infer_request, encode_infer_result, parameter_value
from server.protocol.tensor_codec import classify

logger = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
Response = TypeVar("Response")


def _fail(context: Context, error: Exception) -> None:
    if isinstance(error, ServerError):
        context.set_code(error.grpc_code)
        context.set_details(error.message)
        return
    logger.exception("unhandled error in a gRPC call", exc_info=error)
    context.set_code(grpc.StatusCode.INTERNAL)
    context.set_details(f"internal error: {type(error).__name__}: {error}")


def _call(context: Context, empty: Response, compute: Callable[[], Response]) -> Response:
    try:
        return compute()
    except Exception as exc:
        _fail(context, exc)
        return empty


class InferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, dataplane: DataPlaneApi) -> None:
        self.dataplane = dataplane

    # -- health and metadata ---------------------------------------------------------------------
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.dataplane.live())

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.dataplane.ready())

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Context) -> pb.ModelReadyResponse:
        return _call(
            context,
            pb.ModelReadyResponse(),
            lambda: pb.ModelReadyResponse(ready=self.dataplane.model_ready(request.name, request.version)),
        )

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        metadata = self.dataplane.server_metadata()
        return pb.ServerMetadataResponse(
            name=metadata.get("name", ""),
            version=metadata.get("version", ""),
            extensions=metadata.get("extensions", []),
        )

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        def build() -> pb.ModelMetadataResponse:
            metadata = self.dataplane.model_metadata(request.name, request.version)
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=metadata.name,
                versions=list(metadata.versions),
                platform=metadata.platform,
                inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in metadata.inputs],
                outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in metadata.outputs],
            )

        return _call(context, pb.ModelMetadataResponse(), build)

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Context) -> pb.ModelConfigResponse:
        return _call(
            context,
            pb.ModelConfigResponse(),
            lambda: pb.ModelConfigResponse(config=self.dataplane.model_config(request.name, request.version)),
        )

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Context
    ) -> pb.ModelStatisticsResponse:
        return _call(
            context,
            pb.ModelStatisticsResponse(),
            lambda: self.dataplane.model_statistics(request.name, request.version),
        )

    # -- inference -------------------------------------------------------------------------------
    async def _infer(self, request: pb.ModelInferRequest, final_flag: bool) -> pb.ModelInferResponse:
        infer_request, classification = decode_infer_request(request)
        result = await self.dataplane.infer(infer_request)
        if classification:
            batched = self.dataplane.model_config(result.model, result.version).max_batch_size > 0
            for tensor in result.outputs:
                count = classification.get(tensor.name)
                if count is not None:
                    tensor.shape, tensor.data = classify(
                        tensor.datatype, tensor.shape, tensor.data, count, batched
                    )
                    tensor.datatype = "BYTES"
        return encode_infer_result(result, final_flag)

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        try:
            return await self._infer(request, final_flag=False)
        except Exception as exc:
            _fail(context, exc)
            return pb.ModelInferResponse()

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: Context
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Requests of one stream run concurrently; each answer is written when it is ready.

        Errors travel in `error_message` and the stream goes on, like Triton. Decoupled models
        (several answers per request) will plug in at `_stream_one`.
        """
        answers: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
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
        answers: asyncio.Queue[pb.ModelStreamInferResponse | None],
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
        self, request: pb.ModelInferRequest, answers: asyncio.Queue[pb.ModelStreamInferResponse | None]
    ) -> None:
        try:
            response = await self._infer(request, final_flag=True)
            answers.put_nowait(pb.ModelStreamInferResponse(infer_response=response))
        except Exception as exc:
            if not isinstance(exc, ServerError):
                logger.exception("unhandled error in a streamed inference")
            answers.put_nowait(
                pb.ModelStreamInferResponse(
                    error_message=str(exc),
                    infer_response=pb.ModelInferResponse(id=request.id),
                )
            )

    # -- repository ------------------------------------------------------------------------------
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Context
    ) -> pb.RepositoryIndexResponse:
        def build() -> pb.RepositoryIndexResponse:
            entry = pb.RepositoryIndexResponse.ModelIndex
            return pb.RepositoryIndexResponse(
                models=[
                    entry(name=e.name, version=e.version, state=e.state, reason=e.reason)
                    for e in self.dataplane.repository_index(request.ready)
                ]
            )

        return _call(context, pb.RepositoryIndexResponse(), build)

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> pb.RepositoryModelLoadResponse:
        try:
            config: str | None = None
            files: dict[str, bytes] = {}
            for key, parameter in request.parameters.items():
                value = parameter_value(parameter)
                if key == "config":
                    config = value if isinstance(value, str) else None
                elif key.startswith("file:"):
                    files[key] = value if isinstance(value, bytes) else str(value).encode()
            await self.dataplane.load_model(request.model_name, config, files or None)
        except Exception as exc:
            _fail(context, exc)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> pb.RepositoryModelUnloadResponse:
        try:
            dependents = request.parameters.get("unload_dependents")
            unload_dependents = bool(parameter_value(dependents)) if dependents is not None else False
            await self.dataplane.unload_model(request.model_name, unload_dependents)
        except Exception as exc:
            _fail(context, exc)
        return pb.RepositoryModelUnloadResponse()

    # -- extensions we do not offer --------------------------------------------------------------
    def _unsupported(self, context: Context, what: str) -> None:
        _fail(context, Unsupported(f"{what} is not supported by this server"))

    async def SystemSharedMemoryStatus(self, request: Any, context: Context) -> Any:
        self._unsupported(context, "the system shared-memory extension")
        return pb.SystemSharedMemoryStatusResponse()

    async def SystemSharedMemoryRegister(self, request: Any, context: Context) -> Any:
        self._unsupported(context, "the system shared-memory extension")
        return pb.SystemSharedMemoryRegisterResponse()

    async def SystemSharedMemoryUnregister(self, request: Any, context: Context) -> Any:
        self._unsupported(context, "the system shared-memory extension")
        return pb.SystemSharedMemoryUnregisterResponse()

    async def CudaSharedMemoryStatus(self, request: Any, context: Context) -> Any:
        self._unsupported(context, "the CUDA shared-memory extension")
        return pb.CudaSharedMemoryStatusResponse()

    async def CudaSharedMemoryRegister(self, request: Any, context: Context) -> Any:
        self._unsupported(context, "the CUDA shared-memory extension")
        return pb.CudaSharedMemoryRegisterResponse()

    async def CudaSharedMemoryUnregister(self, request: Any, context: Context) -> Any:
        self._unsupported(context, "the CUDA shared-memory extension")
        return pb.CudaSharedMemoryUnregisterResponse()

    async def TraceSetting(self, request: Any, context: Context) -> Any:
        self._unsupported(context, "the trace extension")
        return pb.TraceSettingResponse()

    async def LogSettings(self, request: Any, context: Context) -> Any:
        self._unsupported(context, "the logging extension")
        return pb.LogSettingsResponse()
