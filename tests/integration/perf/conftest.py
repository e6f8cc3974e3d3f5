"""Servers for the perf/tune tests: ours and the real Triton (skipped when not installed), each in
explicit model-control mode over the same toy repository (identity python model, ONNX MLP)."""

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
    if onnx_through_python:  # the bundled Triton has only the python backend
        onnx_python_wrapper(mlp)
    return repo


def serve(kind: str, root: Path, *extra: str) -> Iterator[Target]:
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


@pytest.fixture(scope="module", params=SERVER_KINDS)
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """One server per kind for a whole test module, explicit mode, every model loaded."""
    yield from serve(request.param, tmp_path_factory.mktemp(request.param), "explicit")
