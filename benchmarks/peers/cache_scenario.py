"""P8 (issue #17): the response cache's hit path, ours against the real Triton 2.51's local cache.

P1's python identity FP32[16] with `response_cache { enable: true }` and a 64 MB local cache on both
servers. perf_analyzer sends the same input (random, generated once) every time, so after the first
request of a run every request is a hit: what is measured is each server's front end plus its
cache lookup, with no model execution.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from benchmarks.peers import repos
from benchmarks.peers.rounds import Plan, alternate
from benchmarks.peers.scenarios import Context, _cases, _perf_analyzer_measure, _running
from benchmarks.peers.systems import OURS, TRITON, start_ours, start_triton
from tests.support.models import write_config
from tests.tools import real_triton

P8_CACHE_BYTES = 64 * 1024 * 1024


def enable_response_cache(model_dir: Path) -> None:
    """Add `response_cache { enable: true }` to a model's config."""
    config_path = model_dir / "config.pbtxt"
    config = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
    config.response_cache.enable = True
    write_config(model_dir, config)


def run_p8(ctx: Context) -> None:
    """perf_analyzer c=8 over gRPC and HTTP on the cached identity, alternating ours and Triton."""
    repo = ctx.workdir / "p8"
    repos.write_identity(repo)
    enable_response_cache(repo / repos.IDENTITY)
    cases = _cases(("grpc", "http"), (8,))
    ours_repo = ctx.ours("P8", repo)
    ours_args = [f"--cache-config=local,size={P8_CACHE_BYTES}"]
    install = real_triton.find_real_triton(ctx.tools.triton_venv)
    triton_args = real_triton.cache_args(P8_CACHE_BYTES, install)
    starters = {
        OURS: lambda: start_ours(ours_repo, ctx.tools, extra_args=ours_args),
        TRITON: lambda: start_triton(repo, ctx.tools, extra_args=triton_args),
    }
    with _running(ctx, "P8", starters) as systems:
        plan: Plan = [(case, [OURS, TRITON]) for case in cases]
        measure = _perf_analyzer_measure(ctx, systems, repos.IDENTITY, cases)
        alternate(ctx.results, "P8", plan, rounds=ctx.rounds, measure=measure)
    ctx.results.note(
        "P8",
        f"--cache-config local,size={P8_CACHE_BYTES} on both; every request after a run's first is a hit",
    )
