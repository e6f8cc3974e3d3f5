"""Dynamic batching: batched vs unbatched throughput in one run, and what statistics cost the hot path.

Part 1 serves the ONNX MLP (256-1024-1024-10, tests/support/models.py) twice from one server:
`mlp_batched` with `dynamic_batching { max_queue_delay_microseconds: 500 }` and `mlp_unbatched`
without it (same weights, same instance count). perf_analyzer drives each over gRPC at one
concurrency; the two alternate round by round (the machine is shared: compare ratios).

Part 2 isolates the statistics counting: an in-process DynamicBatcher over an instant in-process
channel (no worker, no protocol) answers N requests once with the real ModelStats and once with a
stats object whose record_* methods do nothing; per-request times alternate round by round.

Usage:  .venv/bin/python -m benchmarks.batching [--rounds 3] [--concurrency 16] [--request-count 1500]
Needs:  perf_analyzer (make perf-analyzer) for part 1; `--skip-server` runs part 2 only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

from server.core.scheduler.dynamic_batcher import DynamicBatcher
from server.core.stats import ModelStats
from server.vocabulary.types import InferenceRequest, Tensor
from tests.support.channels import InstantChannel

ROOT = Path(__file__).resolve().parent.parent
PA_VENV = ROOT / ".tools" / "pa"
PERF_ANALYZER = PA_VENV / "bin" / "perf_analyzer"
CUDA_RUNTIME = PA_VENV / "lib" / "python3.11" / "site-packages" / "nvidia" / "cuda_runtime" / "lib"


# -- part 1: batched vs unbatched over the real server ----------------------------------------------


def perf_analyzer(grpc_url: str, model: str, concurrency: int, request_count: int) -> dict[str, float]:
    env = dict(os.environ, LD_LIBRARY_PATH=str(CUDA_RUNTIME))
    command = [
        str(PERF_ANALYZER),
        *("-m", model, "-u", grpc_url, "-i", "grpc"),
        *("--concurrency-range", f"{concurrency}:{concurrency}"),
        *("--measurement-mode", "count_windows", "--measurement-request-count", str(request_count)),
        *("--stability-percentage", "999", "--max-trials", "3"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stdout[-2000:] + done.stderr[-2000:])

    def number(pattern: str) -> float:
        found = re.search(pattern, done.stdout)
        if found is None:
            raise RuntimeError(f"no '{pattern}' in perf_analyzer output:\n{done.stdout}")
        return float(found.group(1))

    inferences = number(r"Inference count: (\d+)")
    return {
        "throughput": number(r"Throughput: ([\d.]+) infer/sec"),
        "p50_us": number(r"p50 latency: (\d+) usec"),
        "queue_us": number(r"queue (\d+) usec"),
        "infer_us": number(r"compute infer (\d+) usec"),
        "avg_batch": inferences / max(number(r"Execution count: (\d+)"), 1.0),
    }


def batched_vs_unbatched(rounds: int, concurrency: int, request_count: int) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.support.models import write_onnx_model
    from tests.support.server import start_server

    models = ("mlp_batched", "mlp_unbatched")
    results: dict[str, list[dict[str, float]]] = {model: [] for model in models}
    with tempfile.TemporaryDirectory() as folder:
        repo = Path(folder)
        write_onnx_model(
            repo, models[0], "mlp", max_batch_size=16, dynamic_batching={"max_queue_delay_microseconds": 500}
        )
        write_onnx_model(repo, models[1], "mlp", max_batch_size=16)
        with start_server(repo) as server:
            for model in models:  # warm both up before measuring
                perf_analyzer(server.grpc_url, model, concurrency, max(request_count // 4, 100))
            for round_index in range(rounds):
                order = models if round_index % 2 == 0 else models[::-1]
                for model in order:
                    results[model].append(perf_analyzer(server.grpc_url, model, concurrency, request_count))
                    print(f"round {round_index + 1} {model}: {results[model][-1]}", file=sys.stderr)
    print(f"\nperf_analyzer gRPC, concurrency {concurrency}, median of {rounds} rounds\n")
    print("| model | infer/s | p50 latency (us) | server queue (us) | compute infer (us) | avg batch |")
    print("|---|---|---|---|---|---|")
    medians = {}
    for model in models:
        median = {key: statistics.median(r[key] for r in results[model]) for key in results[model][0]}
        medians[model] = median
        print(
            f"| {model} | {median['throughput']:.0f} | {median['p50_us']:.0f} | {median['queue_us']:.0f} "
            f"| {median['infer_us']:.0f} | {median['avg_batch']:.2f} |"
        )
    ratio = medians[models[0]]["throughput"] / medians[models[1]]["throughput"]
    print(f"| **ratio batched / unbatched** | **{ratio:.2f}x** | | | | |")


# -- part 2: what counting costs per request --------------------------------------------------------


class NoStats(ModelStats):
    """Statistics switched off: the baseline for the counting cost."""

    def record_success(self, **_: int) -> None:
        return None

    def record_successes(self, count: int, **_: int) -> None:
        return None

    def record_failure(self, **_: object) -> None:
        return None

    def record_execution(self, **_: int) -> None:
        return None


async def per_request_us(stats: ModelStats, requests: int, concurrency: int) -> float:
    from tritonclient.grpc import model_config_pb2

    config = model_config_pb2.ModelConfig(name="bench", max_batch_size=16)
    config.dynamic_batching.SetInParent()
    batcher = DynamicBatcher(config, 1, [InstantChannel()], stats)
    await batcher.start()
    tensor = Tensor("INPUT0", "FP32", [1, 4], bytes(16))

    async def client(count: int) -> None:
        for _ in range(count):
            await batcher.infer(InferenceRequest("bench", "1", [tensor]))

    started = time.perf_counter()
    await asyncio.gather(*(client(requests // concurrency) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await batcher.stop()
    return elapsed / (requests // concurrency * concurrency) * 1e6


def counting_overhead(rounds: int, requests: int, concurrency: int) -> None:
    timings: dict[str, list[float]] = {"ModelStats": [], "no statistics": []}
    for round_index in range(rounds * 2):
        name = "ModelStats" if round_index % 2 == 0 else "no statistics"
        stats = ModelStats() if name == "ModelStats" else NoStats()
        timings[name].append(asyncio.run(per_request_us(stats, requests, concurrency)))
    stats = ModelStats()
    calls = 200_000
    record_ns = (
        timeit.timeit(
            lambda: stats.record_successes(
                8,
                request_ns_total=1,
                queue_ns_total=1,
                compute_input_ns=1,
                compute_infer_ns=1,
                compute_output_ns=1,
            ),
            number=calls,
        )
        / calls
        * 1e9
    )
    execution_ns = (
        timeit.timeit(
            lambda: stats.record_execution(
                batch_size=8, compute_input_ns=1, compute_infer_ns=1, compute_output_ns=1
            ),
            number=calls,
        )
        / calls
        * 1e9
    )
    with_stats = statistics.median(timings["ModelStats"])
    without = statistics.median(timings["no statistics"])
    print(
        f"\nin-process DynamicBatcher, {requests} requests, concurrency {concurrency}, median of {rounds}\n"
    )
    print("| statistics | us per request (batcher + counting) |")
    print("|---|---|")
    print(f"| ModelStats (real) | {with_stats:.2f} |")
    print(f"| none (record_* do nothing) | {without:.2f} |")
    print(
        f"| **difference** | **{with_stats - without:+.2f} us ({(with_stats / without - 1) * 100:+.1f}%)** |"
    )
    print(f"\nper batch: record_successes {record_ns:.0f} ns, record_execution {execution_ns:.0f} ns")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--request-count", type=int, default=1500, help="perf_analyzer requests per window")
    parser.add_argument("--overhead-requests", type=int, default=40_000)
    parser.add_argument("--skip-server", action="store_true", help="only the in-process counting check")
    args = parser.parse_args()
    if not args.skip_server:
        if not PERF_ANALYZER.exists():
            raise SystemExit("perf_analyzer is missing: run `make perf-analyzer` (or pass --skip-server)")
        batched_vs_unbatched(args.rounds, args.concurrency, args.request_count)
    counting_overhead(args.rounds, args.overhead_requests, args.concurrency)


if __name__ == "__main__":
    main()
