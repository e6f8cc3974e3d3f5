"""Schedulers over their instances: the hot path's own cost, and what a second arena slot gains.

Part `hot`: the DynamicBatcher and the DefaultScheduler over an instant in-process channel (no
worker, no protocol), N requests from C concurrent callers: microseconds per request of scheduling
alone, the figure that must not grow when the scheduling code changes. Run it with PYTHONPATH
pointing at two trees to compare them.

Part `worker`: the DynamicBatcher over one real worker process (python identity, `dynamic_batching
{}`, `--max-batch-size`, default 4) with `WorkerOptions.max_in_flight` 1 (a batch goes to the
worker only when the previous one has returned) and 2 (the main process copies batch k+1 into the
second arena slot while the worker computes batch k; the pool lends that slot only when more
requests are queued than one batch holds, so at max_batch_size >= concurrency it is never used and
both settings run alike). Concurrency 8 and 16; the two settings alternate round by
round (the machine is shared: compare ratios). `--dims` sets the tensor shape (e.g. 3,224,224 for
602 KB tensors, where copying in costs most); `--delay-ms` makes each execute() sleep (a model
whose compute takes time). Reports requests/s, p50 latency, average batch size.

Usage:  PYTHONPATH=. .venv/bin/python -m benchmarks.pool_bench [hot|worker|all] [--rounds 3]
            [--requests 4000] [--concurrency 8,16] [--dims 16] [--delay-ms 0] [--max-batch-size 4]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from server.core.scheduler.base import Scheduler
from server.core.scheduler.default import DefaultScheduler
from server.core.scheduler.dynamic_batcher import DynamicBatcher
from server.core.stats import ModelStats
from server.vocabulary.types import InferenceRequest, Tensor
from server.workers.backend_loading import InstanceLaunch
from server.workers.channel import WorkerChannel
from tests.support.channels import InstantChannel


async def drive(
    scheduler: Scheduler, make: Any, requests: int, concurrency: int
) -> tuple[float, list[float]]:
    """(elapsed s, latencies s) for `requests` requests from `concurrency` callers."""
    latencies: list[float] = []
    per_caller = requests // concurrency

    async def caller() -> None:
        for _ in range(per_caller):
            started = time.perf_counter()
            await scheduler.infer(make())
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


# -- part hot --------------------------------------------------------------------------------------


async def hot_us(kind: str, requests: int, concurrency: int) -> float:
    from tritonclient.grpc import model_config_pb2

    config = model_config_pb2.ModelConfig(name="bench", max_batch_size=16)
    scheduler: Scheduler
    if kind == "dynamic":
        config.dynamic_batching.SetInParent()
        scheduler = DynamicBatcher(config, 1, [InstantChannel()], ModelStats())
    else:
        scheduler = DefaultScheduler("bench", 1, [InstantChannel()], ModelStats(), max_batch_size=16)
    await scheduler.start()
    tensor = Tensor("INPUT0", "FP32", [1, 4], bytes(16))
    elapsed, _ = await drive(
        scheduler, lambda: InferenceRequest("bench", "1", [tensor]), requests, concurrency
    )
    await scheduler.stop()
    return elapsed / (requests // concurrency * concurrency) * 1e6


def hot(rounds: int, requests: int, concurrency: int) -> None:
    timings: dict[str, list[float]] = {"dynamic": [], "default": []}
    for _ in range(rounds):
        for kind, samples in timings.items():
            samples.append(asyncio.run(hot_us(kind, requests, concurrency)))
    print(f"hot path, {requests} requests, concurrency {concurrency}, median of {rounds} (us/request):")
    for kind, samples in timings.items():
        print(f"  {kind:8s} {statistics.median(samples):6.2f}   rounds {[round(s, 2) for s in samples]}")


# -- part worker -----------------------------------------------------------------------------------


async def worker_part(  # noqa: PLR0917 - the command line's settings
    rounds: int, requests: int, concurrencies: list[int], dims: list[int], delay_ms: int, max_batch_size: int
) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from server.core.placement import place_instances
    from server.repository import load_model_config
    from server.workers.settings import WorkerOptions
    from server.workers.supervisor import start_worker
    from tests.support.models import write_python_model

    repo = Path(tempfile.mkdtemp(prefix="pool_bench_"))
    kind, extra = ("slow", {"delay_ms": delay_ms}) if delay_ms else ("identity", {})
    model_dir = write_python_model(
        repo, "m", kind, dims=dims, max_batch_size=max_batch_size, dynamic_batching={}, **extra
    )
    config = load_model_config(model_dir)
    spec = place_instances(config, [])[0]
    payload = np.arange(int(np.prod(dims)), dtype=np.float32).tobytes()
    shape = [1, *dims]

    def make() -> InferenceRequest:
        return InferenceRequest("m", "1", [Tensor("INPUT0", "FP32", shape, payload)])

    setups: dict[int, tuple[DynamicBatcher, ModelStats, WorkerChannel]] = {}
    for in_flight in (1, 2):
        channel = await start_worker(
            InstanceLaunch("m", 1, model_dir, config, spec), WorkerOptions(max_in_flight=in_flight)
        )
        stats = ModelStats()
        batcher = DynamicBatcher(config, 1, [channel], stats)
        await batcher.start()
        await drive(batcher, make, 400, 8)  # warm up
        setups[in_flight] = (batcher, stats, channel)
    results: dict[tuple[int, int], list[tuple[float, float, float]]] = {}
    try:
        for round_index in range(rounds):
            order = (1, 2) if round_index % 2 == 0 else (2, 1)
            for concurrency in concurrencies:
                for in_flight in order:
                    batcher, stats, _ = setups[in_flight]
                    executions, inferences = stats.execution_count, stats.inference_count
                    elapsed, latencies = await drive(batcher, make, requests, concurrency)
                    count = len(latencies)
                    batches = max(stats.execution_count - executions, 1)
                    results.setdefault((concurrency, in_flight), []).append(
                        (
                            count / elapsed,
                            statistics.median(latencies) * 1e6,
                            (stats.inference_count - inferences) / batches,
                        )
                    )
    finally:
        for batcher, _, worker in setups.values():
            await batcher.stop()
            await worker.close()
    print(
        f"worker: python {kind} FP32{dims}, max_batch_size {max_batch_size}, dynamic_batching {{}}, "
        f"{rounds} rounds, medians"
    )
    print("| concurrency | max_in_flight | req/s | p50 us | avg batch |")
    print("|---|---|---|---|---|")
    for (concurrency, in_flight), samples in sorted(results.items()):
        rate, p50, batch = (statistics.median(s[i] for s in samples) for i in range(3))
        print(f"| {concurrency} | {in_flight} | {rate:.0f} | {p50:.0f} | {batch:.2f} |")
    for concurrency in concurrencies:
        ratios = [
            two[0] / one[0]
            for one, two in zip(results[(concurrency, 1)], results[(concurrency, 2)], strict=True)
        ]
        print(
            f"c={concurrency}: req/s ratio in_flight 2/1 median {statistics.median(ratios):.2f} "
            f"(per round {', '.join(f'{r:.2f}' for r in ratios)})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("part", nargs="?", choices=("hot", "worker", "all"), default="all")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--hot-requests", type=int, default=40_000)
    parser.add_argument("--concurrency", default="8,16")
    parser.add_argument("--dims", default="16")
    parser.add_argument("--delay-ms", type=int, default=0)
    parser.add_argument("--max-batch-size", type=int, default=4)
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    if args.part in ("hot", "all"):
        hot(args.rounds, args.hot_requests, max(concurrencies))
    if args.part in ("worker", "all"):
        dims = [int(d) for d in args.dims.split(",")]
        asyncio.run(
            worker_part(args.rounds, args.requests, concurrencies, dims, args.delay_ms, args.max_batch_size)
        )


if __name__ == "__main__":
    main()
