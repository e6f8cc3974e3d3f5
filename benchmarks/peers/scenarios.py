"""The scenarios of issue #8 (P1 overhead, P2 compute, P3 large tensors, P4 start-up, MLServer)
and of #16 (P7 stateful: the sequence batcher).

Each scenario writes its repositories, starts every system it compares (all up at once, so a
round can switch between them in seconds; their idle CPU is noted to show they do not steal from
each other), and hands `rounds.alternate` one measure function.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.peers import repos
from benchmarks.peers.load import (
    P50,
    P99,
    THROUGHPUT,
    LoadSpec,
    Sample,
    WindowSizer,
    run_perf_analyzer,
    run_tritonctl_perf,
)
from benchmarks.peers.rounds import Plan, Results, alternate
from benchmarks.peers.systems import (
    MLSERVER,
    OURS,
    TRITON,
    System,
    idle_cpu_percent,
    start_mlserver,
    start_ours,
    start_triton,
    time_to_ready,
)
from benchmarks.peers.tools import Tools

MB_PER_S = "MB/s"
READY_S = "ready s"
ONNXRUNTIME = "onnxruntime"  # the in-process ceiling of P2
P3_BYTES = 4 * 3 * 224 * 224  # one FP32 3x224x224 tensor, each way

SCENARIOS = ("P1", "P2", "P3", "P4", "P5", "P6", "P7", "MLServer", "P8", "P3shm")


@dataclass
class Context:
    """What every scenario needs: the peers, the run's settings and where results go."""

    tools: Tools
    results: Results
    workdir: Path
    rounds: int
    sizer: WindowSizer
    p1_concurrency: tuple[int, ...] = (1, 8)
    p2_concurrency: tuple[int, ...] = (1, 8, 16)
    p3_concurrency: tuple[int, ...] = (1, 4)
    p4_models: int = 50
    mlserver_workers: int = 1
    ours_instance_mode: str = "process"  # TRITONCTL_INSTANCE_MODE of our copies of the repositories

    def ours(self, scenario: str, repo: Path) -> Path:
        """The copy of `repo` our server serves (see repos.ours_copy); notes a non-default mode."""
        if self.ours_instance_mode != "process":
            note = f"ours: every model with TRITONCTL_INSTANCE_MODE {self.ours_instance_mode}"
            if note not in self.results.notes.get(scenario, []):
                self.results.note(scenario, note)
        return repos.ours_copy(repo, self.ours_instance_mode)


def _cases(protocols: tuple[str, ...], levels: tuple[int, ...]) -> dict[str, tuple[str, int]]:
    names = {"grpc": "gRPC", "http": "HTTP"}
    return {f"{names[p]} c={level}": (p, level) for p in protocols for level in levels}


@contextlib.contextmanager
def _running(
    ctx: Context, scenario: str, starters: dict[str, Callable[[], System]]
) -> Iterator[dict[str, System]]:
    """Start every system (stopping all on the way out) and note how much CPU each burns idle."""
    with contextlib.ExitStack() as stack:
        systems: dict[str, System] = {}
        for name, start in starters.items():
            systems[name] = start()
            stack.callback(systems[name].stop)
        idle = ", ".join(
            f"{name} {idle_cpu_percent(system.pid, 1.0):.1f}%" for name, system in systems.items()
        )
        ctx.results.note(scenario, f"idle CPU with all systems up: {idle}")
        yield systems


def _perf_analyzer_measure(
    ctx: Context, systems: dict[str, System], model: str, cases: dict[str, tuple[str, int]]
) -> Callable[[str, str], Sample]:
    def measure(case: str, system: str) -> Sample:
        protocol, concurrency = cases[case]
        key = f"{model}/{system}/{case}"
        spec = LoadSpec(systems[system].url(protocol), protocol, model, concurrency)
        sample = run_perf_analyzer(ctx.tools, spec, ctx.sizer.count(key))
        ctx.sizer.observe(key, sample)
        return sample

    return measure


def run_p1(ctx: Context) -> None:
    """Python identity FP32[16], perf_analyzer over gRPC and HTTP (binary), c=1 and c=8."""
    repo = ctx.workdir / "p1"
    repos.write_identity(repo)
    cases = _cases(("grpc", "http"), ctx.p1_concurrency)
    ours_repo = ctx.ours("P1", repo)
    starters = {OURS: lambda: start_ours(ours_repo, ctx.tools), TRITON: lambda: start_triton(repo, ctx.tools)}
    with _running(ctx, "P1", starters) as systems:
        plan: Plan = [(case, [OURS, TRITON]) for case in cases]
        measure = _perf_analyzer_measure(ctx, systems, repos.IDENTITY, cases)
        alternate(ctx.results, "P1", plan, rounds=ctx.rounds, measure=measure)


def _ceiling(onnx_path: Path, interval_s: float) -> Callable[[int], Sample]:
    """onnxruntime in this process on the same file, one intra-op thread like both servers' sessions."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)

    def measure(batch: int) -> Sample:
        feed = {"INPUT0": rng.standard_normal((batch, repos.MLP_SIZES[0]), dtype=np.float32)}
        latencies: list[int] = []
        started = time.perf_counter_ns()
        deadline = started + int(interval_s * 3 * 1e9)  # as long as three perf_analyzer windows
        now = started
        while now < deadline:
            session.run(None, feed)
            latencies.append(time.perf_counter_ns() - now)
            now = time.perf_counter_ns()
        latencies.sort()
        return {
            THROUGHPUT: len(latencies) * batch / ((now - started) / 1e9),
            P50: statistics.median(latencies) / 1000.0,
            P99: latencies[int(len(latencies) * 0.99)] / 1000.0,
        }

    return measure


def run_p2(ctx: Context) -> None:
    """ONNX MLP: our onnxruntime backend vs Triton's python model.py calling onnxruntime; plus the ceiling."""
    ours_repo, triton_repo = ctx.workdir / "p2-ours", ctx.workdir / "p2-triton"
    onnx_path = repos.write_mlp_repos(ours_repo, triton_repo)
    cases = _cases(("grpc",), ctx.p2_concurrency)
    ceiling_cases = {"in-process batch 1": 1, "in-process batch 16": 16}
    ceiling = _ceiling(onnx_path, ctx.sizer.interval_s)
    ours_repo = ctx.ours("P2", ours_repo)
    starters = {
        OURS: lambda: start_ours(ours_repo, ctx.tools),
        TRITON: lambda: start_triton(triton_repo, ctx.tools),
    }
    with _running(ctx, "P2", starters) as systems:
        served = _perf_analyzer_measure(ctx, systems, repos.MLP, cases)

        def measure(case: str, system: str) -> Sample:
            return ceiling(ceiling_cases[case]) if system == ONNXRUNTIME else served(case, system)

        plan: Plan = [(case, [OURS, TRITON]) for case in cases]
        plan += [(case, [ONNXRUNTIME]) for case in ceiling_cases]
        alternate(ctx.results, "P2", plan, rounds=ctx.rounds, measure=measure)
    ctx.results.note("P2", "all sessions (ours, Triton's model.py, in-process) use 1 intra-op thread")


def run_p3(ctx: Context) -> None:
    """Python identity FP32 3x224x224 (~600 KB each way), gRPC and HTTP binary: MB/s of input tensors."""
    repo = ctx.workdir / "p3"
    repos.write_identity(repo, repos.IMAGE, repos.P3_DIMS)
    cases = _cases(("grpc", "http"), ctx.p3_concurrency)
    ours_repo = ctx.ours("P3", repo)
    starters = {OURS: lambda: start_ours(ours_repo, ctx.tools), TRITON: lambda: start_triton(repo, ctx.tools)}
    with _running(ctx, "P3", starters) as systems:
        served = _perf_analyzer_measure(ctx, systems, repos.IMAGE, cases)

        def measure(case: str, system: str) -> Sample:
            sample = served(case, system)
            sample[MB_PER_S] = sample[THROUGHPUT] * P3_BYTES / 1e6
            return sample

        plan: Plan = [(case, [OURS, TRITON]) for case in cases]
        alternate(ctx.results, "P3", plan, rounds=ctx.rounds, measure=measure)


def run_p4(ctx: Context) -> None:
    """Seconds from process start to /v2/health/ready with 1 and with N identity models."""
    repo_one, repo_many = ctx.workdir / "p4-1", ctx.workdir / f"p4-{ctx.p4_models}"
    repos.write_many_identities(repo_one, 1)
    repos.write_many_identities(repo_many, ctx.p4_models)
    cases = {"1 model": repo_one, f"{ctx.p4_models} models": repo_many}
    ours_cases = {case: ctx.ours("P4", path) for case, path in cases.items()}

    def measure(case: str, system: str) -> Sample:
        return {READY_S: time_to_ready(system, (ours_cases if system == OURS else cases)[case], ctx.tools)}

    def warmup(case: str, system: str) -> object:  # one start per system fills the page cache
        repo = ours_cases["1 model"] if system == OURS else repo_one
        return time_to_ready(system, repo, ctx.tools) if case == "1 model" else None

    plan: Plan = [(case, [OURS, TRITON]) for case in cases]
    alternate(ctx.results, "P4", plan, rounds=ctx.rounds, measure=measure, warmup=warmup)


def run_p7(ctx: Context) -> None:
    """Stateful: python accumulator, sequence batcher (direct); perf_analyzer sends sequences of 20."""
    repo = ctx.workdir / "p7"
    repos.write_sequence_accumulator(repo)
    cases = _cases(("grpc",), (8,))
    ours_repo = ctx.ours("P7", repo)
    starters = {OURS: lambda: start_ours(ours_repo, ctx.tools), TRITON: lambda: start_triton(repo, ctx.tools)}
    with _running(ctx, "P7", starters) as systems:
        plan: Plan = [(case, [OURS, TRITON]) for case in cases]
        measure = _perf_analyzer_measure(ctx, systems, repos.SEQUENCE, cases)
        alternate(ctx.results, "P7", plan, rounds=ctx.rounds, measure=measure)
    ctx.results.note("P7", "perf_analyzer detects the sequence model: concurrency 8 = 8 live sequences")


def run_mlserver(ctx: Context) -> None:
    """P1's identity on MLServer, ours and Triton, all loaded by `tritonctl perf` (HTTP: JSON tensors)."""
    repo, folder = ctx.workdir / "mls-repo", ctx.workdir / "mls-mlserver"
    repos.write_identity(repo)
    repos.write_mlserver_identity(folder)
    cases = _cases(("grpc", "http"), (8,))
    ours_repo = ctx.ours("MLServer", repo)
    starters = {
        OURS: lambda: start_ours(ours_repo, ctx.tools),
        TRITON: lambda: start_triton(repo, ctx.tools),
        MLSERVER: lambda: start_mlserver(folder, ctx.tools, ctx.mlserver_workers),
    }
    with _running(ctx, "MLServer", starters) as systems:

        def measure(case: str, system: str) -> Sample:
            protocol, concurrency = cases[case]
            key = f"mls/{system}/{case}"
            url = systems[system].url(protocol)
            spec = LoadSpec(url, protocol, repos.IDENTITY, concurrency, http_json=protocol == "http")
            sample = run_tritonctl_perf(ctx.tools, spec, ctx.sizer.count(key))
            ctx.sizer.observe(key, sample)
            return sample

        plan: Plan = [(case, [OURS, TRITON, MLSERVER]) for case in cases]
        alternate(ctx.results, "MLServer", plan, rounds=ctx.rounds, measure=measure)
    ctx.results.note(
        "MLServer",
        f"MLServer parallel_workers={ctx.mlserver_workers}, no adaptive batching (its default); "
        "HTTP carries JSON tensors for every system (MLServer has no binary extension)",
    )


RUNNERS: dict[str, Callable[[Context], None]] = {
    "P1": run_p1,
    "P2": run_p2,
    "P3": run_p3,
    "P4": run_p4,
    "P7": run_p7,
    "MLServer": run_mlserver,
}


def _run_p8(ctx: Context) -> None:
    from benchmarks.peers.cache_scenario import run_p8  # it builds on this module's helpers

    run_p8(ctx)


RUNNERS["P8"] = _run_p8


def _run_p3shm(ctx: Context) -> None:
    from benchmarks.peers.shm_scenario import run_p3shm  # P3 through system shared memory (#17)

    run_p3shm(ctx)


RUNNERS["P3shm"] = _run_p3shm


def _run_p5(ctx: Context) -> None:
    from benchmarks.peers.python_scenarios import run_p5  # decoupled streaming (#15)

    run_p5(ctx)


def _run_p6(ctx: Context) -> None:
    from benchmarks.peers.python_scenarios import run_p6  # BLS (#15)

    run_p6(ctx)


RUNNERS["P5"] = _run_p5
RUNNERS["P6"] = _run_p6
