"""Soak test (`make soak`): steady load for a long while, RSS of the server and its workers sampled.

One real server serves a python-backend identity (dynamic batching, 2 instances) and an ONNX
add/sub model; client threads keep a fixed number of requests in flight over HTTP and gRPC
(JSON, binary and gRPC raw tensors, a few bad requests mixed in) for `--duration` seconds.
Every `--interval` seconds the RSS of the main process and of each worker is recorded. Memory
growth is measured from the end of the warm-up (`--warmup`, the median of the first three samples
after it) to the end (median of the last three): the run passes when the main process, each worker
and the total grow by less than `--max-growth` percent and no request failed unexpectedly.

Usage:  .venv/bin/python -m benchmarks.soak [--duration 600] [--warmup 60] [--concurrency 4]
                                            [--rate 0] [--interval 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import psutil


def write_models(repo: Path) -> None:
    from tests.support.models import write_onnx_model, write_python_model

    write_python_model(repo, "py_identity", "identity", dims=[16], instance_count=2, dynamic_batching=True)
    write_onnx_model(repo, "onnx_add_sub", "add_sub", dims=[16])


def processes(server_pid: int) -> dict[str, psutil.Process]:
    """ "main" and "worker <pid>" -> process."""
    main = psutil.Process(server_pid)
    found = {"main": main}
    for child in main.children(recursive=True):
        try:
            if "server.workers.main" in child.cmdline():
                found[f"worker {child.pid}"] = child
        except psutil.NoSuchProcess:
            continue
    return found


def sample_rss(server_pid: int) -> dict[str, float]:
    rss: dict[str, float] = {}
    for name, process in processes(server_pid).items():
        try:
            rss[name] = process.memory_info().rss / 2**20
        except psutil.NoSuchProcess:
            continue
    rss["total"] = sum(rss.values())
    return rss


class Load:
    """Threads that keep `concurrency` requests in flight (optionally paced to `rate` per second)."""

    def __init__(self, http_url: str, grpc_url: str, concurrency: int, rate: float) -> None:
        self.http_url, self.grpc_url = http_url, grpc_url
        self.concurrency, self.rate = concurrency, rate
        self.counts: Counter[str] = Counter()
        self.errors: list[str] = []
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(concurrency)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._halt.set()
        for thread in self._threads:
            thread.join(60)

    def _count(self, key: str, error: str | None = None) -> None:
        with self._lock:
            self.counts[key] += 1
            if error is not None and len(self.errors) < 20:
                self.errors.append(error[:300])

    def _run(self, index: int) -> None:
        import tritonclient.grpc as grpcclient
        import tritonclient.http as httpclient
        from tritonclient.utils import InferenceServerException

        http = httpclient.InferenceServerClient(self.http_url, network_timeout=60)
        grpc = grpcclient.InferenceServerClient(self.grpc_url)
        data = np.arange(16, dtype=np.float32).reshape(1, 16)
        period = self.concurrency / self.rate if self.rate > 0 else 0.0
        step = index
        while not self._halt.is_set():
            started = time.monotonic()
            kind = ("http_json", "http_binary", "grpc", "grpc_onnx", "http_bad")[step % 5]
            step += 1
            try:
                if kind.startswith("http"):
                    tensor = httpclient.InferInput(
                        "INPUT0", [1, 16] if kind != "http_bad" else [1, 15], "FP32"
                    )
                    tensor.set_data_from_numpy(
                        data if kind != "http_bad" else data[:, :15], binary_data=kind != "http_json"
                    )
                    http.infer("py_identity", [tensor])
                elif kind == "grpc":
                    tensor = grpcclient.InferInput("INPUT0", [1, 16], "FP32")
                    tensor.set_data_from_numpy(data)
                    grpc.infer("py_identity", [tensor])
                else:
                    a, b = (
                        grpcclient.InferInput("INPUT0", [1, 16], "FP32"),
                        grpcclient.InferInput("INPUT1", [1, 16], "FP32"),
                    )
                    a.set_data_from_numpy(data)
                    b.set_data_from_numpy(data)
                    grpc.infer("onnx_add_sub", [a, b])
                self._count(
                    kind if kind != "http_bad" else "unexpected_success",
                    None if kind != "http_bad" else "a bad request succeeded",
                )
            except InferenceServerException as exc:
                if kind == "http_bad" and exc.status() == "400":
                    self._count("http_bad_refused")
                else:
                    self._count("error", f"{kind}: {exc.status()} {exc.message()}")
            if period:
                time.sleep(max(0.0, period - (time.monotonic() - started)))
        http.close()
        grpc.close()


def growth(samples: list[tuple[float, dict[str, float]]], warmup: float, key: str) -> dict[str, float] | None:
    after = [rss[key] for t, rss in samples if t >= warmup and key in rss]
    if len(after) < 6:
        return None
    start, end = statistics.median(after[:3]), statistics.median(after[-3:])
    return {
        "after_warmup_mib": round(start, 1),
        "end_mib": round(end, 1),
        "growth_pct": round(100 * (end - start) / start, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=600, help="seconds of steady load")
    parser.add_argument("--warmup", type=float, default=60, help="seconds before growth is measured")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    parser.add_argument(
        "--rate", type=float, default=0, help="requests per second in total (0: as fast as possible)"
    )
    parser.add_argument("--interval", type=float, default=5, help="seconds between RSS samples")
    parser.add_argument(
        "--max-growth", type=float, default=5.0, help="allowed RSS growth after warm-up, percent"
    )
    parser.add_argument("--json", type=Path, help="write the summary here too")
    args = parser.parse_args(argv)

    from tests.support.server import launch_server

    samples: list[tuple[float, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="tritonctl-soak-") as folder:
        repo = Path(folder)
        write_models(repo)
        server = launch_server(repo)
        try:
            load = Load(server.http_url, server.grpc_url, args.concurrency, args.rate)
            started = time.monotonic()
            load.start()
            cpu_start = sum(
                p.cpu_times().user + p.cpu_times().system for p in processes(server.process.pid).values()
            )
            while (elapsed := time.monotonic() - started) < args.duration:
                samples.append((round(elapsed, 1), sample_rss(server.process.pid)))
                print(
                    f"{elapsed:6.0f}s  {load.counts.total():8d} requests  "
                    + "  ".join(f"{k} {v:.1f}" for k, v in samples[-1][1].items()),
                    file=sys.stderr,
                    flush=True,
                )
                time.sleep(args.interval)
            samples.append((round(time.monotonic() - started, 1), sample_rss(server.process.pid)))
            cpu_end = sum(
                p.cpu_times().user + p.cpu_times().system for p in processes(server.process.pid).values()
            )
            load.stop()
            alive = server.process.poll() is None
            final_workers = sorted(k for k in processes(server.process.pid) if k != "main")
        finally:
            server.close()

    seconds = samples[-1][0]
    keys = sorted({key for _, rss in samples for key in rss})
    growths = {key: growth(samples, args.warmup, key) for key in keys}
    growths = {key: value for key, value in growths.items() if value is not None}
    requests = sum(v for k, v in load.counts.items() if k not in ("error", "unexpected_success"))
    summary: dict[str, Any] = {
        "duration_s": seconds,
        "warmup_s": args.warmup,
        "concurrency": args.concurrency,
        "requests": requests,
        "requests_per_s": round(requests / seconds, 1) if seconds else 0.0,
        "server_cpu_s": round(cpu_end - cpu_start, 1),
        "counts": dict(load.counts),
        "errors": load.errors,
        "server_alive": alive,
        "workers_at_end": final_workers,
        "rss_growth": growths,
        "machine": {"cpus": psutil.cpu_count(), "load_avg_1m_at_end": round(psutil.getloadavg()[0], 2)},
        "samples": samples,
    }
    too_much = {k: v["growth_pct"] for k, v in growths.items() if v["growth_pct"] >= args.max_growth}
    passed = (
        alive
        and not load.counts.get("error")
        and not load.counts.get("unexpected_success")
        and not too_much
        and "total" in growths
    )
    summary["verdict"] = "PASS" if passed else f"FAIL {too_much or ''}"
    text = json.dumps(summary, indent=2)
    print(json.dumps({k: v for k, v in summary.items() if k != "samples"}, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
