"""Main-thread CPU per request of the front end + core, without sockets, client or worker.

Why: on this 2-core box the one front-end thread is what caps P1 (benchmarks/NOTES.md), and
wall-clock runs are too noisy to see a 5 us change. This drives the real protocol objects
(`H2Connection` for gRPC, `HttpConnection` for HTTP) through a fake transport with the bytes a
client sends, through the real DataPlane, validator and scheduler, to an instance that answers
at once (identity, no work): what is left is our front end's own cost, as process CPU time.

    .venv/bin/python -m benchmarks.frontend_cost [--requests 20000] [--concurrency 8] [--profile]

`--concurrency N` feeds N requests per loop turn (gRPC: N streams in one read, as perf_analyzer's
one connection does; HTTP: N connections, one request each). `--profile` prints cProfile's top
functions (its overhead inflates the totals; read the shares).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import struct
import time
from pathlib import Path
from typing import Any

import hpack
import numpy as np
import orjson
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2, service_pb2

from server.core.dataplane import DataPlane
from server.core.model_version import LoadedVersion
from server.core.request_validator import RequestValidator
from server.core.scheduler import create_scheduler
from server.core.stats import ModelStats
from server.vocabulary import h2frames as h2
from server.vocabulary.types import InferenceRequest, InferenceResult, Tensor
from server.workers.channel import BatchOutcome
from tests.support.channels import InstantChannel

MODEL = "identity"
_PROFILE: list[cProfile.Profile] = []  # --profile: enabled around the timed loops only
CONFIG = """
name: "identity"
backend: "python"
max_batch_size: 64
dynamic_batching {}
input [{ name: "INPUT0" data_type: TYPE_FP32 dims: [16] }]
output [{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [16] }]
"""


class AnswerAtOnce(InstantChannel):
    """An instance with no cost: OUTPUT0 = INPUT0 (named as the model's output), answered at once."""

    instance_name = "identity_0_cpu"

    async def submit(self, requests: list[InferenceRequest]) -> BatchOutcome:
        results: list[Any] = [
            InferenceResult(
                r.model,
                r.version,
                [Tensor("OUTPUT0", "FP32", r.inputs[0].shape, bytes(r.inputs[0].data))],
                r.id,
            )
            for r in requests
        ]
        return BatchOutcome(results)


class OneModelRegistry:
    def __init__(self, loaded: LoadedVersion) -> None:
        self.loaded = loaded
        self.table = self  # the DataPlane looks versions up in `registry.table`

    def get(self, name: str, version: str = "", *, route: bool = False) -> LoadedVersion:
        return self.loaded


class FakeTransport:
    def __init__(self) -> None:
        self.sent = 0
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.sent += len(data)
        self.writes += 1

    def writelines(self, parts: list[bytes]) -> None:
        for part in parts:
            self.write(part)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        return None

    def pause_reading(self) -> None:
        return None

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        return None

    def resume_reading(self) -> None:
        return None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


async def _dataplane() -> DataPlane:
    config = text_format.Parse(CONFIG, model_config_pb2.ModelConfig())
    stats = ModelStats()
    channel = AnswerAtOnce()
    scheduler = create_scheduler(config, 1, [channel], stats)
    await scheduler.start()
    validator = RequestValidator(MODEL, config)
    loaded = LoadedVersion(MODEL, 1, config, Path(), [channel], scheduler, stats, validator, [])
    plane = DataPlane(OneModelRegistry(loaded))  # type: ignore[arg-type]
    plane.mark_started()
    return plane


def _infer_message() -> bytes:
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    tensor = request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 16])
    del tensor
    request.outputs.add(name="OUTPUT0")
    request.raw_input_contents.append(np.arange(16, dtype=np.float32).tobytes())
    return bytes(request.SerializeToString())


async def run_grpc(requests: int, concurrency: int) -> float:
    from server.protocol.grpc.h2server import H2Connection, H2Settings
    from server.protocol.grpc.service import InferenceRpcs

    settings = H2Settings(InferenceRpcs(await _dataplane()), {}, 64 << 20)
    connection = H2Connection(settings, set())
    transport = FakeTransport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    connection.data_received(h2.PREFACE + h2.frame(h2.SETTINGS, 0, 0))
    encoder = hpack.Encoder()
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/inference.GRPCInferenceService/ModelInfer"),
        (":authority", "127.0.0.1:8001"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    message = h2.grpc_message(_infer_message())
    stream_id = 1

    def chunk() -> bytes:
        nonlocal stream_id
        parts = []
        for _ in range(concurrency):
            block = encoder.encode(headers)
            parts.append(h2.frame(h2.HEADERS, h2.END_HEADERS, stream_id, block))
            parts.append(h2.frame(h2.DATA, h2.END_STREAM, stream_id, message))
            stream_id += 2
        return b"".join(parts)

    chunks = [chunk() for _ in range(requests // concurrency)]
    started = time.process_time()
    for profiler in _PROFILE:
        profiler.enable()
    credited = 0
    for data in chunks:
        # Give back the connection window our answers used, as a client does.
        update = h2.frame(h2.WINDOW_UPDATE, 0, 0, struct.pack(">I", transport.sent - credited))
        credited = transport.sent
        connection.data_received(update + data if credited else data)
        while connection.busy:
            await asyncio.sleep(0)
        await asyncio.sleep(0)  # the send of the last answers
    spent = time.process_time() - started
    for profiler in _PROFILE:
        profiler.disable()
    assert transport.writes > 0
    return spent / (len(chunks) * concurrency) * 1e6


def _http_request() -> bytes:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT0",
                    "shape": [1, 16],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 64},
                }
            ],
            "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}],
        }
    )
    body = header + np.arange(16, dtype=np.float32).tobytes()
    head = (
        f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
        f"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: {len(header)}\r\n"
        f"Accept: */*\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def run_http(requests: int, concurrency: int) -> float:
    from server.protocol.http.routes import HttpApp
    from server.protocol.http.server import HttpConnection

    app = HttpApp(await _dataplane(), 64 << 20, {})
    connections = []
    for _ in range(concurrency):
        connection = HttpConnection(app, set())
        connection.connection_made(FakeTransport())  # type: ignore[arg-type]
        connections.append(connection)
    data = _http_request()
    rounds = requests // concurrency
    started = time.process_time()
    for profiler in _PROFILE:
        profiler.enable()
    for _ in range(rounds):
        for connection in connections:
            connection.data_received(data)
        while any(connection.busy for connection in connections):
            await asyncio.sleep(0)
    spent = time.process_time() - started
    for profiler in _PROFILE:
        profiler.disable()
    return spent / (rounds * concurrency) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--protocol", choices=("grpc", "http", "both"), default="both")
    parser.add_argument("--rounds", type=int, default=3, help="best of N (CPU time; the minimum is the cost)")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    import uvloop

    protocols = ("grpc", "http") if args.protocol == "both" else (args.protocol,)
    for protocol in protocols:
        runner = run_grpc if protocol == "grpc" else run_http
        costs = []
        for _ in range(args.rounds):
            _PROFILE[:] = [cProfile.Profile()] if args.profile else []
            costs.append(uvloop.run(runner(args.requests, args.concurrency)))
            for profiler in _PROFILE:
                pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        print(
            f"{protocol} c={args.concurrency}: {min(costs):.1f} us/request main-thread CPU "
            f"(rounds: {', '.join(f'{c:.1f}' for c in costs)})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
