"""gRPC stack benchmark: grpc.aio (`--grpc-stack=grpcio`) vs our lean HTTP/2 server (`h2`).

perf_analyzer over gRPC on the python identity FP32[16], concurrency 1 and 8; the two stacks
alternate round by round (this 2-core machine is shared and noisy, so read the ratios). Besides
throughput and p50 latency it reports, per request, the CPU time the server (all its processes)
spends and the time its threads sat runnable waiting for a core (run-queue wait, from
/proc/<pid>/task/<tid>/schedstat): a protocol stall would show up as latency that neither covers,
while a crowded machine shows up as run-queue wait.

Usage:  .venv/bin/python -m benchmarks.grpc_stack [--rounds 4] [--interval-ms 2000]
Needs:  perf_analyzer (make perf-analyzer).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import psutil

from benchmarks.http_stack import Unstable, run_perf_analyzer
from benchmarks.identity import success_count, tree_cpu_seconds

STACKS = ("grpcio", "h2")
CONCURRENCIES = (1, 8)
MODEL = "py_identity"
Row = tuple[float, float, float, float]  # infer/s, p50 us, server CPU us/req, run-queue wait us/req


def tree_run_queue_seconds(pid: int) -> float:
    """Time the threads of the server and its children spent runnable but not running (Linux)."""
    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            for thread in process.threads():
                with contextlib.suppress(OSError):
                    path = f"/proc/{process.pid}/task/{thread.id}/schedstat"
                    with open(path, encoding="ascii") as handle:
                        total += int(handle.read().split()[1])
    return total / 1e9


def measure(repo: Path, rounds: int, interval_ms: int) -> dict[tuple[str, int], list[Row]]:
    from tests.support.server import start_server

    results: dict[tuple[str, int], list[Row]] = {}
    for round_index in range(rounds):
        order = STACKS if round_index % 2 == 0 else tuple(reversed(STACKS))
        for stack in order:
            with start_server(repo, f"--grpc-stack={stack}", timeout=180) as server:
                pid = server.process.pid
                for concurrency in CONCURRENCIES:
                    count, seconds = success_count(server.http_url, MODEL), tree_cpu_seconds(pid)
                    waited = tree_run_queue_seconds(pid)
                    try:
                        row = run_perf_analyzer(
                            server.grpc_url, "grpc", concurrency, interval_ms, model=MODEL
                        )
                    except Unstable:
                        print(
                            f"round {round_index + 1} {stack} c={concurrency}: unstable, skipped", flush=True
                        )
                        continue
                    served = max(success_count(server.http_url, MODEL) - count, 1)
                    cpu_us = (tree_cpu_seconds(pid) - seconds) * 1e6 / served
                    wait_us = (tree_run_queue_seconds(pid) - waited) * 1e6 / served
                    throughput, p50 = row["Inferences/Second"], row.get("p50 latency", 0.0)
                    results.setdefault((stack, concurrency), []).append((throughput, p50, cpu_us, wait_us))
                    print(
                        f"round {round_index + 1} {stack:6s} c={concurrency}: {throughput:7.0f} infer/s  "
                        f"p50 {p50:6.0f} us  server CPU {cpu_us:5.0f} us/req  "
                        f"run-queue wait {wait_us:5.0f} us/req",
                        flush=True,
                    )
    return results


def report(results: dict[tuple[str, int], list[Row]]) -> str:
    lines = [
        "| stack | c | infer/s (median) | vs grpcio | p50 us | server CPU us/req | vs grpcio "
        "| run-queue wait us/req |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for concurrency in CONCURRENCIES:
        base = results.get(("grpcio", concurrency))
        for stack in STACKS:
            runs = results.get((stack, concurrency))
            if not runs:
                continue
            speed, p50, cost, wait = (statistics.median(r[i] for r in runs) for i in range(4))
            speed_ratio = cost_ratio = ""
            if base:
                speed_ratio = f"{speed / statistics.median(r[0] for r in base):.2f}"
                cost_ratio = f"{cost / statistics.median(r[2] for r in base):.2f}"
            lines.append(
                f"| {stack} | {concurrency} | {speed:.0f} | {speed_ratio} | {p50:.0f} | {cost:.0f} "
                f"| {cost_ratio} | {wait:.0f} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--interval-ms", type=int, default=2000)
    args = parser.parse_args(argv)
    from tests.support.models import write_python_model

    with tempfile.TemporaryDirectory(prefix="grpc-stack-bench-") as tmp:
        repo = Path(tmp)
        write_python_model(repo, MODEL, "identity", dims=[16], max_batch_size=64, dynamic_batching=True)
        results = measure(repo, args.rounds, args.interval_ms)
    print()
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
