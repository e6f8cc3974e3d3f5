"""Long fuzz run (`make fuzz`): 100k+ hostile HTTP and gRPC requests against one real server.

The cases are the short suite's (tests/fuzz/http_cases.py, grpc_cases.py), drawn by hypothesis
with a fixed seed per client process; after each drawn case a few byte-mutated variants of it
are sent too (drawing is the slow part). Failures are collected, not stopped at: a 500 or
INTERNAL/UNKNOWN answer, a well-formed request left unanswered, the server process dying. A
watcher asks /v2/health/live and gRPC ServerLive every half second for the whole run; every one
of those must answer. The server's RSS is sampled at start and end.

Usage:  .venv/bin/python -m benchmarks.fuzz_long [--requests 100000] [--clients 4] [--mutations 4]
                                                 [--seed 1000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

# A process that draws one half of the cases (protocol "http" or "grpc").
Job = tuple[str, int, int, int, int, int]  # (protocol, http port, grpc port, examples, mutations, seed)


def mutate(data: bytes, rng: random.Random) -> bytes:
    """Flip, cut or insert a few bytes (cheap variants around each generated case)."""
    mutated = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        position = rng.randrange(max(len(mutated), 1))
        operation = rng.randrange(3)
        if operation == 0 and mutated:
            mutated[position] = rng.randrange(256)
        elif operation == 1:
            del mutated[position : position + rng.randint(1, 8)]
        else:
            mutated[position:position] = rng.randbytes(rng.randint(1, 8))
    return bytes(mutated)


def _settings(examples: int) -> Any:
    from hypothesis import HealthCheck, Phase, settings

    # Only generation: failures are recorded by the test body, so there is nothing to shrink.
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate],
    )


def run_job(job: Job) -> dict[str, Any]:
    """Draw `examples` cases, send each and `mutations` byte-mutated variants of it; returns
    counts and up to 20 failure descriptions."""
    from hypothesis import given, seed

    protocol, http_port, grpc_port, examples, mutations, job_seed = job
    rng = random.Random(job_seed)
    outcomes: Counter[str] = Counter()
    failures: list[str] = []

    def record(error: AssertionError) -> None:
        outcomes["failure"] += 1
        if len(failures) < 20:
            failures.append(str(error)[:800])

    if protocol == "http":
        from tests.fuzz.http_cases import HttpCase, check, http_cases, send

        @seed(job_seed)
        @_settings(examples)
        @given(case=http_cases)
        def fuzz_http(case: HttpCase) -> None:
            variants = [HttpCase(raw=mutate(case.to_bytes(), rng) + b"\r\n\r\n") for _ in range(mutations)]
            for sent in (case, *variants):
                # Raw bytes may leave a request half-framed; the server then rightly waits.
                outcome = send(http_port, sent, timeout=15.0 if sent.raw is None else 0.25)
                outcomes["sent"] += 1
                outcomes["raw" if sent.raw is not None else "structured"] += 1
                outcomes["timed_out"] += outcome.timed_out
                for status in outcome.statuses:
                    outcomes[f"status {status}"] += 1
                try:
                    check(sent, outcome)
                except AssertionError as error:
                    record(error)

        fuzz_http()
    else:
        import grpc

        from tests.fuzz.grpc_cases import GrpcCase, call, check, grpc_cases

        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")

        @seed(job_seed)
        @_settings(examples)
        @given(case=grpc_cases())
        def fuzz_grpc(case: GrpcCase) -> None:
            variants = [GrpcCase(case.method, mutate(case.payload, rng)) for _ in range(mutations)]
            for sent in (case, *variants):
                outcome = call(channel, sent)
                outcomes["sent"] += 1
                outcomes[f"code {outcome[0].name}"] += 1
                try:
                    check(sent, outcome)
                except AssertionError as error:
                    record(error)

        fuzz_grpc()
        channel.close()
    return {"protocol": protocol, "outcomes": dict(outcomes), "failures": failures}


class HealthWatcher(threading.Thread):
    """Asks HTTP /v2/health/live and gRPC ServerLive every `interval` seconds until stopped."""

    def __init__(self, http_url: str, grpc_url: str, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.http_url, self.grpc_url, self.interval = http_url, grpc_url, interval
        self.checks = 0
        self.failures: list[str] = []
        self.slowest = 0.0
        self._halt = threading.Event()

    def run(self) -> None:
        import tritonclient.grpc as grpcclient

        grpc = grpcclient.InferenceServerClient(self.grpc_url)
        while not self._halt.wait(self.interval):
            started = time.monotonic()
            try:
                with urllib.request.urlopen(f"http://{self.http_url}/v2/health/live", timeout=10) as answer:
                    http_ok = answer.status == 200
                grpc_ok = grpc.is_server_live(client_timeout=10)
            except Exception as exc:
                http_ok = grpc_ok = False
                self.failures.append(f"{time.strftime('%H:%M:%S')}: {type(exc).__name__}: {exc}")
            else:
                if not (http_ok and grpc_ok):
                    self.failures.append(f"{time.strftime('%H:%M:%S')}: http={http_ok} grpc={grpc_ok}")
            self.slowest = max(self.slowest, time.monotonic() - started)
            self.checks += 1
        grpc.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(30)


def server_rss_mib(pid: int) -> float:
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=100_000, help="total cases, half HTTP, half gRPC")
    parser.add_argument("--clients", type=int, default=4, help="client processes drawing cases")
    parser.add_argument(
        "--mutations", type=int, default=4, help="byte-mutated variants sent after each generated case"
    )
    parser.add_argument("--seed", type=int, default=1000, help="client process i draws with seed SEED + i")
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra server flag, e.g. --server-arg=--grpc-stack=h2",
    )
    parser.add_argument("--json", type=Path, help="write the summary here too")
    args = parser.parse_args(argv)

    from tests.fuzz.conftest import FUZZ_SERVER_ARGS, write_fuzz_models
    from tests.support.server import launch_server

    with tempfile.TemporaryDirectory(prefix="tritonctl-fuzz-") as folder:
        repo = Path(folder)
        write_fuzz_models(repo)
        server = launch_server(repo, *FUZZ_SERVER_ARGS, *args.server_arg)
        try:
            rss_start = server_rss_mib(server.process.pid)
            watcher = HealthWatcher(server.http_url, server.grpc_url)
            watcher.start()
            clients = max(2, args.clients)
            per_job = -(-args.requests // (clients * (1 + args.mutations)))
            jobs: list[Job] = [
                (
                    "http" if i % 2 == 0 else "grpc",
                    server.http_port,
                    server.grpc_port,
                    per_job,
                    args.mutations,
                    args.seed + i,
                )
                for i in range(clients)
            ]
            started = time.monotonic()
            with multiprocessing.get_context("spawn").Pool(clients) as pool:
                results = pool.map(run_job, jobs)
            seconds = time.monotonic() - started
            watcher.stop()
            alive = server.process.poll() is None
            rss_end = server_rss_mib(server.process.pid) if alive else 0.0
            ready = server.get("/v2/health/ready")[0] == 200
        finally:
            server.close()

    totals: Counter[str] = Counter()
    for result in results:
        totals.update({f"{result['protocol']} {k}": v for k, v in result["outcomes"].items()})
    failures = [f for result in results for f in result["failures"]]
    summary = {
        "requests": sum(r["outcomes"].get("sent", 0) for r in results),
        "seconds": round(seconds, 1),
        "client_processes": clients,
        "server_args": [*FUZZ_SERVER_ARGS, *args.server_arg],
        "failures": sum(r["outcomes"].get("failure", 0) for r in results),
        "server_alive_at_end": alive,
        "server_ready_at_end": ready,
        "health_checks": watcher.checks,
        "health_check_failures": len(watcher.failures),
        "slowest_health_check_s": round(watcher.slowest, 3),
        "server_rss_mib": {"start": round(rss_start, 1), "end": round(rss_end, 1)},
        "outcomes": dict(sorted(totals.items())),
        "first_failures": failures[:10],
        "health_failures": watcher.failures[:10],
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    passed = (
        summary["failures"] == 0
        and alive
        and ready
        and not watcher.failures
        and summary["requests"] >= args.requests
    )
    print("PASS" if passed else "FAIL", file=sys.stderr)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
