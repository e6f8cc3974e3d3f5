"""`tritonctl perf` vs perf_analyzer: same server, same model, same settings, alternating in one run.

The question (issue #5): is our load generator the bottleneck? Both clients drive one server (the
real Triton by default, or ours) at the same concurrency with the same windows; each round runs
perf_analyzer and tritonctl perf back to back (order alternating), and the report gives the median
throughput of each and their ratio. On a machine where client and server share the cores, a client
that spends more CPU per request leaves less to the server: that is exactly what this measures.

Usage:  .venv/bin/python -m benchmarks.perf_vs_pa [--server triton|ours] [--rounds 3]
            [--interval-ms 2000] [--workers 1] [--concurrency 1,8] [--protocols grpc,http]
Needs:  perf_analyzer (make perf-analyzer); for --server triton, .tools/triton (PEERS.md).
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path

from benchmarks.http_stack import Unstable, run_perf_analyzer

MODEL = "identity"
Key = tuple[str, str, int]  # (client, protocol, concurrency)


@contextlib.contextmanager
def running_server(kind: str, root: Path) -> Iterator[tuple[str, str]]:
    from tests.support.models import write_python_model

    repo = root / "repo"
    repo.mkdir()
    write_python_model(repo, MODEL, "identity", dims=[16], max_batch_size=8)
    if kind == "triton":
        from tests.tools.real_triton import start_real_triton

        with start_real_triton(repo) as triton:
            yield triton.http_url, triton.grpc_url
    else:
        from tests.support.server import start_server

        with start_server(repo, timeout=180) as server:
            yield server.http_url, server.grpc_url


def run_tritonctl(url: str, protocol: str, concurrency: int, interval_ms: int, workers: int) -> float:
    """tritonctl perf with perf_analyzer's settings from run_perf_analyzer (-p, -s 100, -r 5)."""
    from tritonctl.perf.runner import run_sweep
    from tritonctl.perf.settings import LoadLevel, MeasurementSettings, PerfSettings

    settings = PerfSettings(
        model=MODEL,
        url=url,
        protocol=protocol,  # type: ignore[arg-type]
        levels=(LoadLevel("concurrency", concurrency),),
        measurement=MeasurementSettings(
            interval_ms=interval_ms, stability_percentage=100.0, max_trials=5, warmup_ms=0
        ),
        workers=workers,
    )
    (result,) = run_sweep(settings).results
    return result.throughput


def measure(args: argparse.Namespace) -> dict[Key, list[float]]:
    results: dict[Key, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp, running_server(args.server, Path(tmp)) as (http_url, grpc_url):
        urls = {"http": http_url, "grpc": grpc_url}
        for round_index in range(args.rounds):
            for protocol in args.protocols:
                for concurrency in args.concurrency:
                    clients = ["perf_analyzer", "tritonctl"]
                    if round_index % 2:
                        clients.reverse()
                    for client in clients:
                        url = urls[protocol]
                        try:
                            if client == "perf_analyzer":
                                value = run_perf_analyzer(url, protocol, concurrency, args.interval_ms, model=MODEL)[
                                    "Inferences/Second"
                                ]
                            else:
                                value = run_tritonctl(url, protocol, concurrency, args.interval_ms, args.workers)
                        except Unstable as exc:
                            print(f"round {round_index + 1}: {exc}; skipped")
                            continue
                        results.setdefault((client, protocol, concurrency), []).append(value)
                        print(f"round {round_index + 1} {protocol} c={concurrency} {client}: {value:.0f} infer/s")
    return results


def report(args: argparse.Namespace, results: dict[Key, list[float]]) -> str:
    lines = [
        f"- Command: `.venv/bin/python -m benchmarks.perf_vs_pa --server {args.server} --rounds {args.rounds} "
        f"--interval-ms {args.interval_ms} --workers {args.workers}`",
        f"- Server: {'real Triton 2.51 (pytriton bundle)' if args.server == 'triton' else 'ours'}, "
        f"python-backend identity FP32[16], batch 1; machine: {platform.machine()}, "
        f"{platform.python_version()}",
        "",
        "| protocol | concurrency | perf_analyzer infer/s | tritonctl perf infer/s | ratio |",
        "|---|---|---|---|---|",
    ]
    for protocol in args.protocols:
        for concurrency in args.concurrency:
            pa = results.get(("perf_analyzer", protocol, concurrency), [])
            ours = results.get(("tritonctl", protocol, concurrency), [])
            if not pa or not ours:
                continue
            pa_median, ours_median = statistics.median(pa), statistics.median(ours)
            lines.append(
                f"| {protocol} | {concurrency} | {pa_median:.0f} | {ours_median:.0f} | "
                f"**{ours_median / pa_median:.2f}** |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--server", choices=("triton", "ours"), default="triton")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--interval-ms", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=1, help="tritonctl perf load processes")
    parser.add_argument("--concurrency", type=lambda s: [int(v) for v in s.split(",")], default=[1, 8])
    parser.add_argument("--protocols", type=lambda s: s.split(","), default=["grpc", "http"])
    args = parser.parse_args()
    print(report(args, measure(args)))


if __name__ == "__main__":
    main()
