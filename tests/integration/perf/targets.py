"""Servers for the perf/tune tests: ours and the real Triton (skipped when not installed), over the
same toy repository (identity python model, ONNX MLP)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.models import write_onnx_model, write_python_model
from tests.support.server import start_server
from tests.tools.real_triton import find_real_triton, onnx_python_wrapper, start_real_triton

SERVER_KINDS = ("ours", "triton")


@dataclass(frozen=True)
class Target:
    """A running server as the tests see it."""

    kind: str
    http_url: str
    grpc_url: str


def write_repository(root: Path, *, onnx_through_python: bool) -> Path:
    repo = root / "repo"
    repo.mkdir()
    write_python_model(repo, "identity", "identity", dims=[16], max_batch_size=8)
    mlp = write_onnx_model(repo, "mlp", "mlp", max_batch_size=8)
    # A misconfigured batcher for tune to fix: it waits 200 ms for a batch of 8 that 4 clients never
    # fill, so it cannot pass 4 requests / 0.2 s = 20 infer/s however idle the machine is, while
    # any small delay serves hundreds even on a crowded one: a gap no CPU noise can close.
    slow = write_onnx_model(
        repo,
        "mlp_tune",
        "mlp",
        max_batch_size=8,
        dynamic_batching={"max_queue_delay_microseconds": 200_000, "preferred_batch_size": [8]},
    )
    if onnx_through_python:  # the bundled Triton has only the python backend
        onnx_python_wrapper(mlp)
        onnx_python_wrapper(slow)
    return repo


def serve(kind: str, root: Path, *extra: str) -> Iterator[Target]:
    """Run a server of `kind` ("ours" or "triton") until the generator closes; "explicit" in extra
    starts it in explicit model-control mode with every model loaded."""
    if kind == "triton":
        if find_real_triton() is None:
            pytest.skip("real Triton not installed (.tools/triton, see tests/tools/real_triton.py)")
        repo = write_repository(root, onnx_through_python=True)
        mode = "explicit" if "explicit" in extra else "none"
        loads = ["*"] if mode == "explicit" else []
        with start_real_triton(repo, model_control_mode=mode, load_models=loads) as triton:
            yield Target(kind, triton.http_url, triton.grpc_url)
    else:
        repo = write_repository(root, onnx_through_python=False)
        args = ("--model-control-mode=explicit", "--load-model=*") if "explicit" in extra else ()
        with start_server(repo, *args, wait_for="ready") as server:
            yield Target(kind, server.http_url, server.grpc_url)
