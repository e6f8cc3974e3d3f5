"""`tritonctl perf` vs perf_analyzer: same server, same model, same settings, alternating in one run.

The question (issue #5): is our load generator the bottleneck? Both clients drive one server (the
real Triton by default, or ours) at the same concurrency with the same windows; each round runs
perf_analyzer and tritonctl perf back to back (order alternating), and the report gives the median
throughput of each and their ratio. On a machine where client and server share the cores, a client
that spends more CPU per request leaves less to the server: that is exactly what this measures.

Usage:  .venv/bin/python -m benchmarks.perf_vs_pa [--server triton|ours] [--rounds 3]
            [--interval-ms 2000] [--workers 0 (auto)] [--concurrency 1,8] [--protocols grpc,http]
Needs:  perf_analyzer (make perf-analyzer); for --server triton, .tools/triton (docs/PEERS.md).
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
Results = dict[Key, dict[int, float]]  # key -> round -> infer/s


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
    from tritonctl.perf.settings import LoadLevel, MeasurementSettings, PerfSettings, auto_workers

    levels = (LoadLevel("concurrency", concurrency),)

    settings = PerfSettings(
        model=MODEL,
        url=url,
        protocol=protocol,  # type: ignore[arg-type]
        levels=levels,
        measurement=MeasurementSettings(
            interval_ms=interval_ms, stability_percentage=100.0, max_trials=5, warmup_ms=0
        ),
        workers=workers or auto_workers(levels),
    )
    (result,) = run_sweep(settings).results
    return result.throughput


def measure_one(client: str, url: str, protocol: str, concurrency: int, args: argparse.Namespace) -> float:
    if client == "perf_analyzer":
        row = run_perf_analyzer(url, protocol, concurrency, args.interval_ms, model=MODEL)
        return row["Inferences/Second"]
    return run_tritonctl(url, protocol, concurrency, args.interval_ms, args.workers)


def measure(args: argparse.Namespace) -> Results:
    results: Results = {}
    with tempfile.TemporaryDirectory() as tmp, running_server(args.server, Path(tmp)) as (http_url, grpc_url):
        urls = {"http": http_url, "grpc": grpc_url}
        for round_index in range(args.rounds):
            for protocol in args.protocols:
                for concurrency in args.concurrency:
                    clients = ["perf_analyzer", "tritonctl"]
                    if round_index % 2:
                        clients.reverse()
                    for client in clients:
                        label = f"round {round_index + 1} {protocol} c={concurrency} {client}"
                        try:
                            value = measure_one(client, urls[protocol], protocol, concurrency, args)
                        except Unstable as exc:
                            print(f"{label}: {exc}; skipped")
                            continue
                        results.setdefault((client, protocol, concurrency), {})[round_index] = value
                        print(f"{label}: {value:.0f} infer/s")
    return results


def report(args: argparse.Namespace, results: Results) -> str:
    server = "real Triton 2.51 (pytriton bundle)" if args.server == "triton" else "ours"
    lines = [
        f"- Command: `.venv/bin/python -m benchmarks.perf_vs_pa --server {args.server} "
        f"--rounds {args.rounds} --interval-ms {args.interval_ms} --workers {args.workers}`",
        f"- Server: {server}, python-backend identity FP32[16], batch 1; "
        f"{platform.machine()}, Python {platform.python_version()}",
        "",
        "| protocol | concurrency | perf_analyzer infer/s | tritonctl perf infer/s | ratio of medians "
        "| median of per-round ratios |",
        "|---|---|---|---|---|---|",
    ]
    for protocol in args.protocols:
        for concurrency in args.concurrency:
            pa = results.get(("perf_analyzer", protocol, concurrency), {})
            ours = results.get(("tritonctl", protocol, concurrency), {})
            rounds = sorted(set(pa) & set(ours))
            if not rounds:
                continue
            pa_median, ours_median = statistics.median(pa.values()), statistics.median(ours.values())
            # Paired: both clients of one round ran back to back, under the same machine load.
            paired = statistics.median(ours[r] / pa[r] for r in rounds)
            lines.append(
                f"| {protocol} | {concurrency} | {pa_median:.0f} | {ours_median:.0f} | "
                f"{ours_median / pa_median:.2f} | **{paired:.2f}** |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--server", choices=("triton", "ours"), default="triton")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--interval-ms", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=0, help="tritonctl perf load processes (0: auto)")
    parser.add_argument("--concurrency", type=lambda s: [int(v) for v in s.split(",")], default=[1, 8])
    parser.add_argument("--protocols", type=lambda s: s.split(","), default=["grpc", "http"])
    args = parser.parse_args()
    print(report(args, measure(args)))


if __name__ == "__main__":
    main()
