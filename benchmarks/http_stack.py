"""Which HTTP stack should carry the front end? Measure the candidates in one run, with perf_analyzer.

Both candidates serve the same stack-independent `HttpApp` (server/protocol/http/routes.py) over an
in-process identity DataPlane (FP32[16], no worker hop), so the numbers isolate the HTTP layer:

    asyncio    our raw asyncio.Protocol + httptools parser on uvloop (server/protocol/http/server.py)
    starlette  a catch-all Starlette route on uvicorn (httptools + uvloop), calling the same HttpApp

Candidates alternate round by round (the machine is shared; ratios, not absolute numbers). Besides
throughput, the server's CPU time per request is reported: it hardly depends on the neighbours' load.
Usage:  .venv/bin/python -m benchmarks.http_stack [--rounds 3] [--interval-ms 2000]
Needs:  perf_analyzer (make perf-analyzer), starlette + uvicorn (pip install -e '.[bench]').
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2, service_pb2

from server.errors import ModelNotFound
from server.vocabulary.types import InferenceRequest, InferenceResult, Tensor

ROOT = Path(__file__).resolve().parent.parent
PA_VENV = ROOT / ".tools" / "pa"
MODEL = "identity"
_CONFIG = f"""
name: "{MODEL}" backend: "python" max_batch_size: 8
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] }} ]
instance_group [ {{ name: "{MODEL}_0" kind: KIND_CPU count: 1 }} ]
"""


# -- the in-process identity DataPlane ----------------------------------------------------------
@dataclass
class _TensorMeta:
    name: str
    datatype: str
    shape: list[int]


@dataclass
class _ModelMeta:
    name: str
    versions: list[str]
    platform: str
    inputs: list[_TensorMeta]
    outputs: list[_TensorMeta]


@dataclass
class _Entry:
    name: str
    version: str = "1"
    state: str = "READY"
    reason: str = ""


@dataclass
class IdentityDataPlane:
    """One model, `identity`: OUTPUT0 = INPUT0. Enough of the DataPlane for perf_analyzer."""

    config: model_config_pb2.ModelConfig = field(
        default_factory=lambda: text_format.Parse(_CONFIG, model_config_pb2.ModelConfig())
    )
    count: int = 0
    ns: int = 0

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return True

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "triton", "version": "2.51.0", "extensions": ["binary_tensor_data", "statistics"]}

    def _check(self, name: str) -> None:
        if name != MODEL:
            raise ModelNotFound(f"Request for unknown model: '{name}' is not found")

    def model_ready(self, name: str, version: str = "") -> bool:
        return name == MODEL

    def model_metadata(self, name: str, version: str = "") -> _ModelMeta:
        self._check(name)
        return _ModelMeta(
            MODEL,
            ["1"],
            "python",
            [_TensorMeta("INPUT0", "FP32", [-1, 16])],
            [_TensorMeta("OUTPUT0", "FP32", [-1, 16])],
        )

    def output_labels(self, name: str, version: str = "") -> dict[str, list[str]]:
        return {}

    def model_config(self, name: str, version: str = "") -> model_config_pb2.ModelConfig:
        self._check(name)
        return self.config

    async def infer(self, request: InferenceRequest) -> InferenceResult:
        self._check(request.model)
        source = request.inputs[0]
        self.count += 1
        return InferenceResult(
            MODEL, "1", [Tensor("OUTPUT0", source.datatype, source.shape, source.data)], id=request.id
        )

    def model_statistics(self, name: str = "", version: str = "") -> service_pb2.ModelStatisticsResponse:
        response = service_pb2.ModelStatisticsResponse()
        stats = response.model_stats.add(name=MODEL, version="1")
        stats.inference_count = stats.execution_count = self.count
        for part in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
            getattr(stats.inference_stats, part).count = self.count
        return response

    def repository_index(self, ready_only: bool = False) -> list[_Entry]:
        return [_Entry(MODEL)]

    async def load_model(
        self, name: str, config_json: str | None = None, files: dict[str, bytes] | None = None
    ) -> None:
        self._check(name)

    async def unload_model(self, name: str, unload_dependents: bool = False) -> None:
        self._check(name)


# -- the two candidate servers ------------------------------------------------------------------
@dataclass
class _Options:
    http_host: str
    http_port: int
    http_max_input_size: int = 64 * 1024 * 1024


async def _serve_asyncio(port: int) -> None:
    from server.protocol.http.server import start_http

    server = await start_http(IdentityDataPlane(), _Options("127.0.0.1", port))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(1.0)


def _serve_starlette(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from server.protocol.http.routes import HttpApp, HttpRequest

    app = HttpApp(IdentityDataPlane(), 64 * 1024 * 1024)

    async def endpoint(request: Request) -> Response:
        body = await request.body()
        headers = {key.lower(): value for key, value in request.headers.items()}
        answer = await app.handle(HttpRequest(request.method, request.url.path, headers, body))
        payload = answer.body if not answer.tail else b"".join([answer.body, *answer.tail])
        return Response(payload, answer.status, dict(answer.headers), media_type=answer.content_type)

    starlette = Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST"])])
    uvicorn.run(starlette, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning")


def serve(stack: str, port: int) -> None:
    if stack == "asyncio":
        import uvloop

        uvloop.run(_serve_asyncio(port))
    else:
        _serve_starlette(port)


# -- perf_analyzer ------------------------------------------------------------------------------
def perf_analyzer_binary() -> Path | None:
    binary = PA_VENV / "bin" / "perf_analyzer"
    return binary if binary.exists() else None


def perf_analyzer_env() -> dict[str, str]:
    libs = sorted(PA_VENV.glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib"))
    return dict(os.environ, LD_LIBRARY_PATH=str(libs[0]) if libs else "")


class Unstable(RuntimeError):
    """perf_analyzer found no stable window (busy shared machine); not a request error."""


def run_perf_analyzer(
    url: str,
    protocol: str,
    concurrency: int,
    interval_ms: int,
    *,
    model: str = MODEL,
    extra: Sequence[str] = (),
) -> dict[str, float]:
    """One perf_analyzer run at one concurrency; returns the CSV row (throughput, latencies in us)."""
    binary = perf_analyzer_binary()
    if binary is None:
        raise SystemExit("perf_analyzer is missing: run `make perf-analyzer` first")
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "pa.csv"
        command = [
            str(binary),
            *("-m", model, "-u", url, "-i", protocol),
            *("--concurrency-range", f"{concurrency}:{concurrency}"),
            # -s 100: on a shared machine only wild swings count as unstable; medians over
            # alternating rounds do the rest.
            *("-p", str(interval_ms), "-s", "100", "-r", "5", "-f", str(report)),
            *extra,
        ]
        done = subprocess.run(command, env=perf_analyzer_env(), capture_output=True, text=True, check=False)
        output = done.stdout + done.stderr
        if "Failed to obtain stable measurement" in output and "error" not in output.lower():
            raise Unstable(f"perf_analyzer: no stable measurement at c={concurrency} on {url}")
        if done.returncode != 0 or not report.exists():
            raise RuntimeError(
                f"perf_analyzer failed ({done.returncode}): {done.stdout[-800:]}{done.stderr[-800:]}"
            )
        with report.open() as handle:
            row = next(csv.DictReader(handle))
    return {key: float(value) for key, value in row.items() if value.replace(".", "", 1).isdigit()}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def served_count(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/{MODEL}/stats", timeout=10) as answer:
        return int(json.loads(answer.read())["model_stats"][0]["inference_count"])


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


Results = dict[tuple[str, str, int], list[float]]  # (metric, stack, concurrency) -> per-round values


def measure(rounds: int, interval_ms: int, stacks: Sequence[str]) -> Results:
    """Throughput, and the server's CPU time per request: the latter hardly depends on what else
    runs on the machine, so it is the steadier comparison on a shared box."""
    results: Results = {}
    for round_index in range(rounds):
        for stack in stacks if round_index % 2 == 0 else list(reversed(stacks)):
            port = free_port()
            process = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.http_stack", "serve", stack, str(port)], cwd=ROOT
            )
            try:
                wait_for_port(port)
                for concurrency in (1, 8):
                    count, cpu = served_count(port), cpu_seconds(process.pid)
                    try:
                        row = run_perf_analyzer(f"127.0.0.1:{port}", "http", concurrency, interval_ms)
                    except Unstable as exc:
                        print(f"round {round_index + 1} {stack} c={concurrency}: skipped ({exc})")
                        continue
                    served = served_count(port) - count
                    cpu_us = (cpu_seconds(process.pid) - cpu) * 1e6 / max(served, 1)
                    throughput = row["Inferences/Second"]
                    results.setdefault(("infer/s", stack, concurrency), []).append(throughput)
                    results.setdefault(("cpu us/req", stack, concurrency), []).append(cpu_us)
                    print(
                        f"round {round_index + 1} {stack:9s} c={concurrency}: {throughput:8.0f} infer/s, "
                        f"server CPU {cpu_us:6.1f} us/request",
                        flush=True,
                    )
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=10)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    serve_parser = sub.add_parser("serve", help="(internal) run one candidate server")
    serve_parser.add_argument("stack", choices=["asyncio", "starlette"])
    serve_parser.add_argument("port", type=int)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--interval-ms", type=int, default=2000)
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.stack, args.port)
        return 0
    stacks = ["asyncio", "starlette"]
    results = measure(args.rounds, args.interval_ms, stacks)

    def median(metric: str, stack: str, concurrency: int) -> float:
        values = results.get((metric, stack, concurrency))
        return statistics.median(values) if values else float("nan")

    print("\n| stack | c=1 infer/s | c=8 infer/s | c=1 server CPU us/req | c=8 server CPU us/req |")
    print("|---|---|---|---|---|")
    for stack in stacks:
        cells = [f"{median('infer/s', stack, c):.0f}" for c in (1, 8)]
        cells += [f"{median('cpu us/req', stack, c):.1f}" for c in (1, 8)]
        print(f"| {stack} | {' | '.join(cells)} |")
    for concurrency in (1, 8):
        speed = median("infer/s", "asyncio", concurrency) / median("infer/s", "starlette", concurrency)
        cost = median("cpu us/req", "starlette", concurrency) / median("cpu us/req", "asyncio", concurrency)
        print(
            f"c={concurrency}: asyncio {speed:.2f}x the throughput, starlette {cost:.2f}x the CPU per request"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
