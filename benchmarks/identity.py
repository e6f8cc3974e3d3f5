"""Identity benchmark: perf_analyzer against our server, with real Triton 2.51 as the baseline.

The whole path is measured: front end -> DataPlane -> scheduler -> shared-memory hop -> worker
process -> backend and back. Models: a python-backend identity and an ONNX identity, FP32[16],
batch 1. Real Triton (pytriton's bundled tritonserver, python backend only) serves the same
python model when it is installed under .tools/triton (see docs/PEERS.md); the two servers alternate
round by round and the report gives ratios. Besides throughput it reports the CPU time the server
(all its processes) spends per request: on a shared machine that figure hardly moves with the
neighbours' load, while throughput does.

Usage:  .venv/bin/python -m benchmarks.identity [--rounds 3] [--interval-ms 2000] [--no-triton]
Needs:  perf_analyzer (make perf-analyzer).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import psutil

from benchmarks.http_stack import Unstable, run_perf_analyzer

Key = tuple[str, str, str, int]  # (server, model, protocol, concurrency)
PROTOCOLS = ("http", "grpc")
CONCURRENCIES = (1, 8)


def write_repository(repo: Path) -> None:
    from tests.support.models import write_onnx_model, write_python_model

    write_python_model(repo, "py_identity", "identity", dims=[16])
    write_onnx_model(repo, "onnx_identity", "identity", dims=[16])


@contextlib.contextmanager
def ours(repo: Path) -> Iterator[tuple[str, str, int]]:
    from tests.support.server import start_server

    with start_server(repo, timeout=180) as server:
        yield server.http_url, server.grpc_url, server.process.pid


@contextlib.contextmanager
def real_triton(repo: Path) -> Iterator[tuple[str, str, int]]:
    from tests.tools.real_triton import start_real_triton

    with start_real_triton(repo, model_control_mode="explicit", load_models=["py_identity"]) as server:
        yield server.http_url, server.grpc_url, server.process.pid


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of the server and every process under it (workers, python-backend stubs)."""
    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def success_count(http_url: str, model: str) -> int:
    with urllib.request.urlopen(f"http://{http_url}/v2/models/{model}/stats", timeout=10) as answer:
        stats = json.loads(answer.read())["model_stats"][0]
    return int(stats["inference_stats"]["success"]["count"])


def measure(
    repo: Path, rounds: int, interval_ms: int, with_triton: bool
) -> tuple[dict[Key, list[float]], dict[Key, list[float]]]:
    """Throughput and server CPU time per request (all processes; steadier on a shared machine)."""
    servers = {"ours": ours, "triton": real_triton} if with_triton else {"ours": ours}
    results: dict[Key, list[float]] = {}
    cpu: dict[Key, list[float]] = {}
    for round_index in range(rounds):
        order = list(servers) if round_index % 2 == 0 else list(reversed(servers))
        for name in order:
            models = ("py_identity", "onnx_identity") if name == "ours" else ("py_identity",)
            with servers[name](repo) as (http_url, grpc_url, pid):
                for model in models:
                    for protocol in PROTOCOLS:
                        url = http_url if protocol == "http" else grpc_url
                        for concurrency in CONCURRENCIES:
                            label = (
                                f"round {round_index + 1} {name:6s} {model:13s} {protocol:4s} c={concurrency}"
                            )
                            count, seconds = success_count(http_url, model), tree_cpu_seconds(pid)
                            try:
                                row = run_perf_analyzer(url, protocol, concurrency, interval_ms, model=model)
                            except Unstable:
                                print(f"{label}: no stable measurement, skipped", flush=True)
                                continue
                            served = max(success_count(http_url, model) - count, 1)
                            cpu_us = (tree_cpu_seconds(pid) - seconds) * 1e6 / served
                            key = (name, model, protocol, concurrency)
                            throughput = row["Inferences/Second"]
                            results.setdefault(key, []).append(throughput)
                            cpu.setdefault(key, []).append(cpu_us)
                            p50 = row.get("p50 latency", 0.0)
                            print(
                                f"{label}: {throughput:8.0f} infer/s  p50 {p50:6.0f} us  "
                                f"CPU {cpu_us:6.0f} us/req",
                                flush=True,
                            )
    return results, cpu


def report(results: dict[Key, list[float]], cpu: dict[Key, list[float]]) -> str:
    """Medians; "vs Triton" compares with real Triton's python identity at the same protocol and c."""
    lines = [
        "| server | model | protocol | c | infer/s | vs Triton | server CPU us/req | vs Triton |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, values in sorted(results.items()):
        server, model, protocol, concurrency = key
        baseline = ("triton", "py_identity", protocol, concurrency)
        speed, cost = statistics.median(values), statistics.median(cpu[key])
        speed_ratio = cost_ratio = ""
        if server == "ours" and baseline in results:
            speed_ratio = f"{speed / statistics.median(results[baseline]):.2f}"
            cost_ratio = f"{cost / statistics.median(cpu[baseline]):.2f}"
        lines.append(
            f"| {server} | {model} | {protocol} | {concurrency} | {speed:.0f} | {speed_ratio} "
            f"| {cost:.0f} | {cost_ratio} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--interval-ms", type=int, default=2000)
    parser.add_argument("--no-triton", action="store_true", help="Skip the real Triton baseline.")
    args = parser.parse_args(argv)
    with_triton = not args.no_triton
    if with_triton:
        from tests.tools.real_triton import find_real_triton

        if find_real_triton() is None:
            print("real Triton is not installed under .tools/triton (docs/PEERS.md): measuring ours only")
            with_triton = False
    with tempfile.TemporaryDirectory(prefix="identity-bench-") as tmp:
        repo = Path(tmp)
        write_repository(repo)
        results, cpu = measure(repo, args.rounds, args.interval_ms, with_triton)
    print()
    print(report(results, cpu))
    return 0


if __name__ == "__main__":
    sys.exit(main())
