"""Round trip through ShmWorkerChannel: identity FP32[16] python model, 1 and 8 concurrent submits.

Measures the main-process <-> worker hop alone (no protocol, no scheduler): each submit carries one
request of 16 floats. Two channels run side by side from one event loop (uvloop when installed),
one with `max_in_flight=1` (one batch outstanding per worker) and one with `max_in_flight=2`
(double-buffered arena slots: the main process writes batch k+1 while the worker computes batch k).
Configurations alternate round by round (the machine is shared: compare ratios, not absolutes).

Usage:  PYTHONPATH=. .venv/bin/python -m benchmarks.channel_bench [--rounds 5] [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from server.core.placement import place_instances
from server.repository import load_model_config
from server.vocabulary.types import InferenceRequest, Tensor
from server.workers.backend_loading import InstanceLaunch
from server.workers.settings import WorkerOptions
from server.workers.shm_channel import ShmWorkerChannel
from server.workers.supervisor import start_worker
from tests.support.models import write_python_model

PAYLOAD = np.arange(16, dtype=np.float32).reshape(1, 16).tobytes()


def one_request(index: int) -> InferenceRequest:
    return InferenceRequest("identity", "", [Tensor("INPUT0", "FP32", [1, 16], PAYLOAD)], id=str(index))


async def drive(channel: ShmWorkerChannel, concurrency: int, total: int) -> tuple[float, float, float, float]:
    """(requests/s, median latency us, main-process CPU us/request, worker CPU us/request).

    CPU time per request stays meaningful on a busy machine, where wall-clock numbers do not."""
    latencies: list[float] = []
    per_worker = total // concurrency

    async def client(offset: int) -> None:
        for i in range(per_worker):
            started = time.perf_counter()
            outcome = await channel.submit([one_request(offset + i)])
            latencies.append(time.perf_counter() - started)
            result = outcome.results[0]
            assert not isinstance(result, Exception) and result.outputs[0].data == PAYLOAD

    worker = psutil.Process(channel.pid)
    worker_cpu, main_cpu = sum(worker.cpu_times()[:2]), time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(client(c * per_worker) for c in range(concurrency)))
    elapsed = time.perf_counter() - started
    count = per_worker * concurrency
    main_us = (time.process_time() - main_cpu) / count * 1e6
    worker_us = (sum(worker.cpu_times()[:2]) - worker_cpu) / count * 1e6
    return count / elapsed, statistics.median(latencies) * 1e6, main_us, worker_us


async def main(rounds: int, total: int) -> None:
    repo = Path(tempfile.mkdtemp(prefix="channel_bench_"))
    model_dir = write_python_model(repo, "identity", "identity", dims=[16])
    config = load_model_config(model_dir)
    spec = place_instances(config, [])[0]
    channels = {
        in_flight: await start_worker(
            InstanceLaunch("identity", 1, model_dir, config, spec), WorkerOptions(max_in_flight=in_flight)
        )
        for in_flight in (1, 2)
    }
    try:
        for channel in channels.values():  # warm up
            await drive(channel, 8, 400)
        results: dict[tuple[int, int], list[tuple[float, float, float, float]]] = {}
        for _ in range(rounds):
            for concurrency in (1, 8):
                for in_flight, channel in channels.items():
                    results.setdefault((concurrency, in_flight), []).append(
                        await drive(channel, concurrency, total)
                    )
        loop_name = type(asyncio.get_running_loop()).__module__
        print(f"python {sys.version.split()[0]}, loop {loop_name}, {rounds} rounds")
        print("concurrency  max_in_flight   req/s  p50 us  main CPU us/req  worker CPU us/req   (medians)")
        for (concurrency, in_flight), samples in sorted(results.items()):
            rate, latency, main_us, worker_us = (statistics.median(s[i] for s in samples) for i in range(4))
            print(f"{concurrency:>11}  {in_flight:>13}  {rate:>6.0f}  {latency:>6.0f}", end="")
            print(f"  {main_us:>15.1f}  {worker_us:>17.1f}")
        for concurrency in (1, 8):
            one = statistics.median(s[0] for s in results[(concurrency, 1)])
            two = statistics.median(s[0] for s in results[(concurrency, 2)])
            print(f"c={concurrency}: max_in_flight=2 / max_in_flight=1 throughput ratio {two / one:.2f}")
    finally:
        await asyncio.gather(*(channel.close() for channel in channels.values()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(args.rounds, args.requests))
