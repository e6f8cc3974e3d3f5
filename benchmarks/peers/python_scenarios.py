"""P5 and P6 (issue #15): python models as Triton users write them, ours against the real Triton 2.51.

P5 streaming: a decoupled python model sending 16 small responses (FP32 [1]) per request from
execute(); perf_analyzer --streaming over gRPC at concurrency 8; responses/s = requests/s x 16.
P6 BLS: a python model whose execute() calls an add_sub python model (FP32 [16]) with
InferenceRequest.exec(); perf_analyzer at concurrency 8 over gRPC and HTTP. Both servers serve
the same model.py files (tests/support/triton_models.py).
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.peers.load import THROUGHPUT, LoadSpec, Sample, run_perf_analyzer
from benchmarks.peers.rounds import Plan, alternate
from benchmarks.peers.scenarios import Context, _cases, _running
from benchmarks.peers.systems import OURS, TRITON, System, start_ours, start_triton
from tests.support.models import write_python_model
from tests.support.triton_models import write_triton_model

RESPONSES_PER_S = "responses/s"
P5_RESPONSES = 16
P5_MODEL, P6_MODEL = "fanout", "bls_add_sub"


def _measure(
    ctx: Context,
    systems: dict[str, System],
    model: str,
    cases: dict[str, tuple[str, int]],
    extra: tuple[str, ...],
) -> object:
    def measure(case: str, system: str) -> Sample:
        protocol, concurrency = cases[case]
        key = f"{model}/{system}/{case}"
        spec = LoadSpec(systems[system].url(protocol), protocol, model, concurrency, extra_args=extra)
        sample = run_perf_analyzer(ctx.tools, spec, ctx.sizer.count(key))
        ctx.sizer.observe(key, sample)
        if model == P5_MODEL:
            sample[RESPONSES_PER_S] = sample[THROUGHPUT] * P5_RESPONSES
        return sample

    return measure


def _compare(
    ctx: Context,
    *,
    scenario: str,
    repo: Path,
    model: str,
    cases: dict[str, tuple[str, int]],
    extra: tuple[str, ...],
) -> None:
    ours_repo = ctx.ours(scenario, repo)
    starters = {OURS: lambda: start_ours(ours_repo, ctx.tools), TRITON: lambda: start_triton(repo, ctx.tools)}
    with _running(ctx, scenario, starters) as systems:
        plan: Plan = [(case, [OURS, TRITON]) for case in cases]
        alternate(
            ctx.results,
            scenario,
            plan,
            rounds=ctx.rounds,
            measure=_measure(ctx, systems, model, cases, extra),
        )


def run_p5(ctx: Context) -> None:
    repo = ctx.workdir / "p5"
    write_triton_model(repo, P5_MODEL, "fanout", parameters={"COUNT": str(P5_RESPONSES)})
    _compare(
        ctx,
        scenario="P5",
        repo=repo,
        model=P5_MODEL,
        cases=_cases(("grpc",), (8,)),
        extra=("--streaming", "--shape", "INPUT0:1"),
    )
    ctx.results.note("P5", f"{P5_RESPONSES} responses per request; perf_analyzer's infer/s counts requests")


def run_p6(ctx: Context) -> None:
    repo = ctx.workdir / "p6"
    write_python_model(repo, "add_sub", "add_sub", max_batch_size=0, dims=[16])
    write_triton_model(repo, P6_MODEL, "bls", parameters={"TARGET": "add_sub"})
    extra = ("--shape", "INPUT0:16", "--shape", "INPUT1:16")
    _compare(ctx, scenario="P6", repo=repo, model=P6_MODEL, cases=_cases(("grpc", "http"), (8,)), extra=extra)
