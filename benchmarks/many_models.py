"""Many models on one machine (issue #18): start-up time and memory, and a budget under Zipf traffic.

    .venv/bin/python -m benchmarks.many_models startup [--onnx 1000] [--python 100]
    .venv/bin/python -m benchmarks.many_models zipf [--models 2000] [--fraction 0.1] [--seconds 120]
                                                    [--rounds 4]

startup: one repository of `--onnx` small ONNX models (add_sub) and `--python` python identity
models; ours (`python -m server`, defaults) is timed from spawn to /v2/health/ready, then its memory
is summed over the server and every descendant (PSS from /proc/PID/smaps_rollup, so shared pages
count once). In the same run the real Triton 2.51 (python backend only, docs/PEERS.md) serves the
same python models alone, and so do we: memory per python instance side by side.

zipf: `--models` small ONNX MLPs (~270 KB of weights each). Phase 1 serves them all loaded; phase 2
registers them with `--model-memory-budget` set to `--fraction` of what phase 1 measured they hold
(statistics memory_usage) and on-demand loading. Both phases: 8 client threads for `--seconds`,
each request's model drawn from Zipf(1.1) over the models' ranks (fixed seed, same sequence). Both
servers stay up and the phases take turns (`--rounds`, 4 by default: 30 s each, alternating), so a
slow spell of a shared machine weighs on both instead of on whichever phase it fell in. Reported:
failed requests, p50/p99 of the 20 hottest models in each phase and their ratio, cold starts
(on-demand load times from the server log, and the latency of requests that waited for one),
evictions per second (tritonctl_model_evictions_total).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.core.registry.memory import MIB, process_pss  # noqa: E402
from tests.support.models import write_onnx_model, write_python_model  # noqa: E402
from tests.tools import real_triton  # noqa: E402

HOST = "127.0.0.1"


# -- processes and memory -----------------------------------------------------------------------------


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def memory_of(pid: int) -> dict[str, Any]:
    processes = tree(pid)
    by_kind: dict[str, list[int]] = {}
    for process in processes:
        try:
            line = " ".join(process.cmdline())
        except psutil.NoSuchProcess:
            continue
        kind = (
            "stub"
            if "triton_python_backend_stub" in line
            else "host"
            if "server.workers.host_process" in line
            else "worker"
            if "server.workers.main" in line
            else "main"
        )
        by_kind.setdefault(kind, []).append(process_pss(process.pid))
    total = sum(sum(values) for values in by_kind.values())
    return {
        "pss_mib": round(total / MIB, 1),
        "processes": len(processes),
        "by_kind_mib": {kind: round(sum(v) / MIB, 1) for kind, v in by_kind.items()},
        "per_instance_mib": {
            kind: round(sum(v) / len(v) / MIB, 2) for kind, v in by_kind.items() if kind in ("worker", "stub")
        },
    }


def ready(http_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{http_url}/v2/health/ready", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class Ours:
    """`python -m server` on free ports in a session of its own."""

    def __init__(self, repo: Path, *args: str) -> None:
        ports = [real_triton.free_port(HOST) for _ in range(3)]
        self.http_url = f"{HOST}:{ports[0]}"
        self.metrics_url = f"{HOST}:{ports[2]}"
        self.log_path = Path(tempfile.mkstemp(prefix="many-models-", suffix=".log")[1])
        command = [
            sys.executable,
            "-m",
            "server",
            f"--model-repository={repo}",
            f"--http-port={ports[0]}",
            f"--grpc-port={ports[1]}",
            f"--metrics-port={ports[2]}",
            "--exit-on-error=false",
            *args,
        ]
        self.started = time.monotonic()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, timeout_s: float = 600.0) -> float:
        while not ready(self.http_url):
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.log()[-3000:]}")
            if time.monotonic() - self.started > timeout_s:
                raise TimeoutError(self.log()[-3000:])
            time.sleep(0.05)
        return time.monotonic() - self.started

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://{self.metrics_url}/metrics", timeout=30) as response:
            return str(response.read().decode())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(60)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.log_path.unlink(missing_ok=True)


def metric_sum(text: str, prefix: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


# -- start-up -----------------------------------------------------------------------------------------


def write_repo(root: Path, onnx: int, python: int) -> None:
    for index in range(onnx):
        write_onnx_model(root, f"onnx_{index:04d}", "add_sub", dims=[4])
    for index in range(python):
        write_python_model(root, f"python_{index:03d}", "identity", dims=[4])


def startup(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="many-models-"))
    both, python_only = work / "both", work / "python"
    write_repo(both, args.onnx, args.python)
    write_repo(python_only, 0, args.python)
    result: dict[str, Any] = {"onnx_models": args.onnx, "python_models": args.python}

    server = Ours(both)
    try:
        result["ours_ready_s"] = round(server.wait_ready(), 2)
        time.sleep(2)  # let the workers settle before reading their memory
        result["ours_memory"] = memory_of(server.process.pid)
        summary = [line for line in server.log().splitlines() if "models (" in line or "FAILED" in line]
        result["ours_summary"] = summary[:5]
    finally:
        server.stop()

    server = Ours(python_only)
    try:
        result["ours_python_only_ready_s"] = round(server.wait_ready(), 2)
        time.sleep(2)
        result["ours_python_only_memory"] = memory_of(server.process.pid)
    finally:
        server.stop()

    install = real_triton.find_real_triton()
    if install is None:
        result["triton"] = "not installed (docs/PEERS.md)"
        return result
    started = time.monotonic()
    triton = real_triton.launch_real_triton(python_only, install=install, startup_timeout=600)
    try:
        result["triton_python_only_ready_s"] = round(time.monotonic() - started, 2)
        time.sleep(2)
        result["triton_python_only_memory"] = memory_of(triton.process.pid)
    finally:
        triton.stop()
    return result


# -- Zipf traffic under a budget ------------------------------------------------------------------------


def zipf_ranks(count: int, draws: int, seed: int, exponent: float = 1.1) -> np.ndarray:
    weights = 1.0 / np.arange(1, count + 1) ** exponent
    rng = np.random.default_rng(seed)
    return rng.choice(count, size=draws, p=weights / weights.sum())


class Traffic:
    """Zipf traffic from `clients` threads against one server, in rounds: each round goes on with
    every client's sequence where the last round left it, so rounds add up to one run."""

    def __init__(self, server: Ours, names: list[str], clients: int, seed: int) -> None:
        self.server = server
        self.names = names
        self.sequences = [iter(zipf_ranks(len(names), 500_000, seed + index)) for index in range(clients)]
        self.records: list[tuple[int, float, bool]] = []  # rank, latency s, failed
        self.errors: list[str] = []
        self.seconds = 0.0
        self._lock = threading.Lock()

    def run(self, seconds: float) -> None:
        started = time.monotonic()
        deadline = started + seconds
        threads = [
            threading.Thread(target=self._client, args=(i, deadline)) for i in range(len(self.sequences))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.seconds += time.monotonic() - started

    def _client(self, index: int, deadline: float) -> None:
        import tritonclient.http as httpclient

        data = np.ones((1, 64), np.float32)
        # A connection per round: tritonclient.http's (gevent) belongs to the thread that made it.
        connection = httpclient.InferenceServerClient(self.server.http_url, network_timeout=300)
        mine: list[tuple[int, float, bool]] = []
        while time.monotonic() < deadline:
            rank = int(next(self.sequences[index]))
            tensor = httpclient.InferInput("INPUT0", [1, 64], "FP32")
            tensor.set_data_from_numpy(data)
            started = time.perf_counter()
            failed = False
            try:
                connection.infer(self.names[rank], [tensor])
            except Exception as exc:
                failed = True
                with self._lock:
                    self.errors.append(str(exc)[:200])
            mine.append((rank, time.perf_counter() - started, failed))
        with self._lock:
            self.records.extend(mine)

    def summary(self) -> dict[str, Any]:
        ranks = np.array([r for r, _, _ in self.records])
        latencies = np.array([t for _, t, _ in self.records])
        hot = latencies[ranks < 20]
        return {
            "requests": len(self.records),
            "failed": sum(1 for *_, f in self.records if f),
            "errors": self.errors[:5],
            "throughput_per_s": round(len(self.records) / self.seconds, 1),
            "hot_p50_ms": round(float(np.percentile(hot, 50)) * 1000, 3),
            "hot_p99_ms": round(float(np.percentile(hot, 99)) * 1000, 3),
            "all_p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 3),
            "distinct_models": len(set(ranks.tolist())),
            "latencies": latencies,
        }


def zipf(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="many-models-zipf-"))
    names = [f"mlp_{index:04d}" for index in range(args.models)]
    for index, name in enumerate(names):
        write_onnx_model(work, name, "mlp", in_features=64, hidden=[256, 128], out_features=10, seed=index)
    result: dict[str, Any] = {
        "models": args.models,
        "clients": args.clients,
        "seconds": args.seconds,
        "rounds": args.rounds,
    }

    # Both servers stay up and take turns: round k drives the all-loaded one, then the budgeted one,
    # for seconds/rounds each, so a slower spell of this shared machine falls on both phases alike.
    everything = Ours(work)
    budgeted_server: Ours | None = None
    try:
        result["all_loaded_ready_s"] = round(everything.wait_ready(), 2)
        held = metric_sum(everything.metrics(), "tritonctl_model_memory_bytes")
        result["all_loaded_models_hold_mib"] = round(held / MIB, 1)
        result["all_loaded_memory"] = memory_of(everything.process.pid)
        budget = int(held * args.fraction)
        result["budget_mib"] = round(budget / MIB, 1)
        budgeted_server = Ours(work, f"--model-memory-budget=cpu={budget}", "--model-load-wait-secs=120")
        result["budget_ready_s"] = round(budgeted_server.wait_ready(), 2)
        before = metric_sum(budgeted_server.metrics(), "tritonctl_model_evictions_total")
        on_demand_before = len(re.findall(r"loaded '[^']+' on demand in", budgeted_server.log()))
        loaded_traffic = Traffic(everything, names, args.clients, args.seed)
        budget_traffic = Traffic(budgeted_server, names, args.clients, args.seed)
        for _ in range(args.rounds):
            loaded_traffic.run(args.seconds / args.rounds)
            budget_traffic.run(args.seconds / args.rounds)
        text = budgeted_server.metrics()
        evictions = metric_sum(text, "tritonctl_model_evictions_total") - before
        result["budget_memory"] = memory_of(budgeted_server.process.pid)
        result["budget_used_mib"] = round(metric_sum(text, "tritonctl_model_memory_used_bytes") / MIB, 1)
        loads = [
            float(s) for s in re.findall(r"loaded '[^']+' on demand in ([0-9.]+) s", budgeted_server.log())
        ]
        loads = loads[on_demand_before:]
        result["resident_models_at_end"] = len(re.findall(r"tritonctl_model_memory_bytes\{", text))
    finally:
        everything.stop()
        if budgeted_server is not None:
            budgeted_server.stop()
    loaded = loaded_traffic.summary()
    budgeted = budget_traffic.summary()
    threshold = np.percentile(loaded["latencies"], 99.9)
    waited = budgeted["latencies"][budgeted["latencies"] > max(threshold, min(loads, default=0.0))]
    for key in ("latencies",):
        loaded.pop(key)
        budgeted.pop(key)
    result["all_loaded"] = loaded
    result["budget"] = budgeted
    result["hot_p99_ratio"] = round(budgeted["hot_p99_ms"] / loaded["hot_p99_ms"], 3)
    result["evictions_per_s"] = round(evictions / budget_traffic.seconds, 2)
    result["cold_start_load_s"] = {
        "count": len(loads),
        "p50": round(float(np.percentile(loads, 50)), 4) if loads else None,
        "p99": round(float(np.percentile(loads, 99)), 4) if loads else None,
    }
    result["cold_start_request_ms"] = {
        "count": len(waited),
        "p50": round(float(np.percentile(waited, 50)) * 1000, 2) if len(waited) else None,
        "p99": round(float(np.percentile(waited, 99)) * 1000, 2) if len(waited) else None,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="scenario", required=True)
    first = sub.add_parser("startup")
    first.add_argument("--onnx", type=int, default=1000)
    first.add_argument("--python", type=int, default=100)
    second = sub.add_parser("zipf")
    second.add_argument("--models", type=int, default=2000)
    second.add_argument("--fraction", type=float, default=0.1)
    second.add_argument("--seconds", type=float, default=120.0)
    second.add_argument("--clients", type=int, default=8)
    second.add_argument("--seed", type=int, default=18)
    second.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="turns each phase takes (seconds/rounds each, alternating); 1: one phase after the other",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the result as JSON here")
    args = parser.parse_args()
    result = startup(args) if args.scenario == "startup" else zipf(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
