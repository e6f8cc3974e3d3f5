"""The cost floor of a grpc.aio front end: the smallest server perf_analyzer accepts, identity in-process.

No worker hop, no scheduler, no validation: what grpc.aio (its C core, cython glue, protobuf) alone
costs per request on this machine. `benchmarks.peers.profile --floor` measures it beside ours and
the real Triton, so a profile of ours can be split into "grpc.aio itself" and "what we add".

    .venv/bin/python -m benchmarks.peers.floor [--engine aio-uvloop|aio|sync]  # prints its gRPC port
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import grpc
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

MODEL = "identity"


class IdentityServicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """OUTPUT0 = INPUT0 for FP32[16] rows; counts rows for the statistics perf_analyzer reads."""

    def __init__(self) -> None:
        self.count = 0

    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request: Any, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="floor", version="0")

    async def ModelMetadata(self, request: Any, context: Any) -> pb.ModelMetadataResponse:
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=MODEL,
            versions=["1"],
            platform="python",
            inputs=[tensor(name="INPUT0", datatype="FP32", shape=[-1, 16])],
            outputs=[tensor(name="OUTPUT0", datatype="FP32", shape=[-1, 16])],
        )

    async def ModelConfig(self, request: Any, context: Any) -> pb.ModelConfigResponse:
        config = mc.ModelConfig(name=MODEL, backend="python", max_batch_size=64)
        config.input.add(name="INPUT0", data_type=mc.TYPE_FP32, dims=[16])
        config.output.add(name="OUTPUT0", data_type=mc.TYPE_FP32, dims=[16])
        return pb.ModelConfigResponse(config=config)

    async def ModelStatistics(self, request: Any, context: Any) -> pb.ModelStatisticsResponse:
        stats = pb.ModelStatistics(
            name=MODEL, version="1", inference_count=self.count, execution_count=self.count
        )
        stats.inference_stats.success.count = self.count
        return pb.ModelStatisticsResponse(model_stats=[stats])

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        tensor = request.inputs[0]
        self.count += tensor.shape[0] if tensor.shape else 1
        output = pb.ModelInferResponse.InferOutputTensor(
            name="OUTPUT0", datatype=tensor.datatype, shape=tensor.shape
        )
        return pb.ModelInferResponse(
            model_name=MODEL, model_version="1", id=request.id, outputs=[output],
            raw_output_contents=[request.raw_input_contents[0]],
        )  # fmt: skip


RPCS = "ServerLive ServerReady ModelReady ServerMetadata ModelMetadata ModelConfig ModelStatistics ModelInfer"


def _sync(handler: Any) -> Any:
    """A sync handler from one of the coroutines above (they never await: run them in one step)."""

    def call(request: Any, context: Any) -> Any:
        try:
            handler(request, context).send(None)
        except StopIteration as done:
            return done.value
        raise RuntimeError("floor handlers must not await")

    return call


async def serve() -> None:
    server = grpc.aio.server()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(IdentityServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


def serve_sync(threads: int) -> None:
    """grpc's thread-pool server: no asyncio, the C core hands each RPC to a pool thread."""
    from concurrent import futures

    servicer, handlers = service_pb2_grpc.GRPCInferenceServiceServicer(), IdentityServicer()
    for name in RPCS.split():
        setattr(servicer, name, _sync(getattr(handlers, name)))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


ENGINES = ("aio-uvloop", "aio", "sync")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engine", choices=ENGINES, default="aio-uvloop", help="ours runs aio on uvloop")
    parser.add_argument("--threads", type=int, default=8, help="pool threads of the sync engine")
    args = parser.parse_args()
    if args.engine == "sync":
        serve_sync(args.threads)
    elif args.engine == "aio":
        asyncio.run(serve())
    else:
        import uvloop

        uvloop.run(serve())


if __name__ == "__main__":
    main()
