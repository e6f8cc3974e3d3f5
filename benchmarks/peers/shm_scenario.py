"""P3shm: P3's 602 KB tensors through system shared memory instead of the request body (issue #17).

The same python identity FP32 3x224x224 model as P3, ours and the real Triton 2.51 up at once;
perf_analyzer 2.51 with `--shared-memory system` (inputs and outputs in regions it registers) and,
in the same rounds, through the request body, so each system's gain from shared memory is read
from one run. Ours runs with `--allow-client-shm=true` (off by default); Triton 2.51 allows it.
"""

from __future__ import annotations

from benchmarks.peers import repos
from benchmarks.peers.load import THROUGHPUT, LoadSpec, Sample, run_perf_analyzer
from benchmarks.peers.rounds import Plan, alternate
from benchmarks.peers.scenarios import MB_PER_S, P3_BYTES, Context, _running
from benchmarks.peers.systems import OURS, TRITON, start_ours, start_triton

SCENARIO = "P3shm"
SHM_FLAGS = ("--shared-memory", "system", "--output-shared-memory-size", str(P3_BYTES))
CASES = {
    f"{name} {way} c={level}": (protocol, level, way == "shm")
    for protocol, name in (("grpc", "gRPC"), ("http", "HTTP"))
    for level in (1, 4)
    for way in ("shm", "body")
}


def run_p3shm(ctx: Context) -> None:
    repo = ctx.workdir / "p3shm"
    repos.write_identity(repo, repos.IMAGE, repos.P3_DIMS)
    ours_repo = ctx.ours(SCENARIO, repo)
    starters = {
        OURS: lambda: start_ours(ours_repo, ctx.tools, extra_args=["--allow-client-shm=true"]),
        TRITON: lambda: start_triton(repo, ctx.tools),
    }
    with _running(ctx, SCENARIO, starters) as systems:

        def measure(case: str, system: str) -> Sample:
            protocol, level, shm = CASES[case]
            key = f"p3shm/{system}/{case}"
            flags = SHM_FLAGS if shm else ()
            spec = LoadSpec(systems[system].url(protocol), protocol, repos.IMAGE, level, extra_args=flags)
            sample = run_perf_analyzer(ctx.tools, spec, ctx.sizer.count(key))
            ctx.sizer.observe(key, sample)
            sample[MB_PER_S] = sample[THROUGHPUT] * P3_BYTES / 1e6
            return sample

        plan: Plan = [(case, [OURS, TRITON]) for case in CASES]
        alternate(ctx.results, SCENARIO, plan, rounds=ctx.rounds, measure=measure)
    ctx.results.note(
        SCENARIO,
        "shm: perf_analyzer --shared-memory system (input and output regions); body: binary tensors "
        "in the request and answer, as P3; ours with --allow-client-shm=true",
    )
