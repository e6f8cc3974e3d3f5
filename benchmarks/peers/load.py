"""The two load generators the harness drives: perf_analyzer 2.51 and `tritonctl perf`.

Both run closed loop at one concurrency and report one Sample (infer/s, p50, p99 and, where the
server keeps statistics, its queue/compute split). Windows are count windows sized from the
rate seen last time (about `interval_s` long): perf_analyzer stalls in time windows above
~20k infer/s over HTTP (docs/PEERS.md), and count windows keep the request count per sample similar
across systems of very different speed. Stability is not awaited (`-s 999`, three windows): the
harness repeats and alternates instead, which the shared 2-core machine needs anyway.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.peers.tools import Tools

Sample = dict[str, float]  # metric name -> value for one measurement

THROUGHPUT = "infer/s"
P50 = "p50 us"
P99 = "p99 us"
WINDOWS = 3
MIN_WINDOW_REQUESTS = 100


class LoadError(RuntimeError):
    """A load generator failed; carries the tail of its output."""


@dataclass(frozen=True)
class LoadSpec:
    """Where and what to load: one model on one endpoint with one protocol."""

    url: str
    protocol: str  # "grpc" or "http"
    model: str
    concurrency: int
    shape: list[int] = field(default_factory=list)  # sample shape without batch dim, for foreign servers
    http_json: bool = False  # plain KServe v2 JSON tensors instead of Triton's binary extension
    extra_args: tuple[str, ...] = ()  # more perf_analyzer flags (e.g. --shared-memory system)


@dataclass
class WindowSizer:
    """Picks each window's request count so a window lasts about `interval_s`."""

    interval_s: float
    rates: dict[str, float] = field(default_factory=dict)

    def count(self, key: str) -> int:
        rate = self.rates.get(key, 0.0)
        return max(MIN_WINDOW_REQUESTS, int(rate * self.interval_s)) if rate else MIN_WINDOW_REQUESTS

    def observe(self, key: str, sample: Sample) -> None:
        if sample.get(THROUGHPUT, 0.0) > 0:
            self.rates[key] = sample[THROUGHPUT]


def run_perf_analyzer(tools: Tools, target: LoadSpec, request_count: int, timeout_s: float = 300.0) -> Sample:
    """One perf_analyzer measurement (three count windows) at the target's concurrency."""
    level = f"{target.concurrency}:{target.concurrency}"
    with tempfile.TemporaryDirectory(prefix="peers-pa-") as folder:
        csv_path = Path(folder) / "pa.csv"
        command = [
            str(tools.perf_analyzer),
            *("-m", target.model, "-u", target.url, "-i", target.protocol),
            *("--concurrency-range", level),
            *("--measurement-mode", "count_windows", "--measurement-request-count", str(request_count)),
            *("--stability-percentage", "999", "--max-trials", str(WINDOWS)),
            *("-f", str(csv_path)),
            *target.extra_args,
        ]
        env = dict(os.environ, LD_LIBRARY_PATH=str(tools.perf_analyzer_libs))
        done = _run(command, env, timeout_s)
        if done.returncode != 0 or not csv_path.exists():
            raise LoadError(
                f"perf_analyzer failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-2000:]}"
            )
        with csv_path.open(newline="") as handle:
            row = next(csv.DictReader(handle))
    sample: Sample = {
        THROUGHPUT: float(row["Inferences/Second"]),
        P50: float(row["p50 latency"]),
        P99: float(row["p99 latency"]),
    }
    # Server-side split (from the statistics extension): where a request's time goes.
    split = (
        ("Client Send", "client send us"),
        ("Network+Server Send/Recv", "network+server us"),
        ("Server Queue", "queue us"),
        ("Server Compute Input", "compute input us"),
        ("Server Compute Infer", "compute us"),
        ("Server Compute Output", "compute output us"),
        ("Client Recv", "client recv us"),
    )
    for column, name in split:
        if row.get(column):
            sample[name] = float(row[column])
    return sample


def run_tritonctl_perf(
    tools: Tools, target: LoadSpec, request_count: int, timeout_s: float = 300.0
) -> Sample:
    """One `tritonctl perf` measurement (three count windows); works on servers without config/stats."""
    with tempfile.TemporaryDirectory(prefix="peers-tp-") as folder:
        json_path = Path(folder) / "perf.json"
        command = [
            sys.executable,
            *("-m", "tritonctl", "perf", "run", target.model, "-u", target.url, "-i", target.protocol),
            *("--concurrency-range", f"{target.concurrency}:{target.concurrency}"),
            *("--request-count", str(request_count), "-s", "999", "-r", str(WINDOWS), "--warmup-ms", "300"),
            *("--json", str(json_path)),
        ]
        if target.shape:
            dims = ",".join(str(dim) for dim in target.shape)
            command += ["--shape", f"INPUT0:{dims}", "--dtype", "INPUT0:FP32"]
        if target.http_json:
            command += ["--http-encoding", "json"]
        env = dict(os.environ, COLUMNS="160", PYTHONPATH=str(tools.ours_code))
        done = _run(command, env, timeout_s, cwd=tools.ours_code)
        if done.returncode != 0 or not json_path.exists():
            raise LoadError(
                f"tritonctl perf failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-2000:]}"
            )
        document = json.loads(json_path.read_text())
    result = document["results"][0]
    if result.get("errors"):
        raise LoadError(f"tritonctl perf: {result['errors']} requests failed against {target.url}")
    return {
        THROUGHPUT: float(result["throughput"]),
        P50: float(result["latency_us"]["p50"]),
        P99: float(result["latency_us"]["p99"]),
    }


def _run(
    command: list[str], env: dict[str, str], timeout_s: float, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=timeout_s, check=False, cwd=cwd
        )
    except subprocess.TimeoutExpired as exc:
        raise LoadError(f"{Path(command[0]).name} ran past {timeout_s:.0f}s: {' '.join(command)}") from exc
