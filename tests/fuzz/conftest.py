"""Real servers for the fuzz tests: python identity and strings models, model control `none`
(so nothing the fuzzer sends can unload a model), a 1 MiB HTTP body limit; gRPC on grpc.aio
(`fuzz_server`, pinned) and on the lean HTTP/2 stack (`fuzz_server_h2`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.models import write_python_model
from tests.support.server import RunningServer, start_server

FUZZ_SERVER_ARGS = ("--http-max-input-size=1048576",)


def write_fuzz_models(repo: Path) -> None:
    write_python_model(repo, "identity", "identity", dims=[-1])
    write_python_model(repo, "strings", "strings", dims=[-1])


@pytest.fixture(scope="session")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo: Path = tmp_path_factory.mktemp("fuzz")
    write_fuzz_models(repo)
    with start_server(repo, *FUZZ_SERVER_ARGS, "--grpc-stack=grpcio") as server:
        yield server


@pytest.fixture(scope="session")
def fuzz_server_h2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The same, gRPC served by the lean HTTP/2 stack (--grpc-stack=h2)."""
    repo: Path = tmp_path_factory.mktemp("fuzz_h2")
    write_fuzz_models(repo)
    with start_server(repo, *FUZZ_SERVER_ARGS, "--grpc-stack=h2") as server:
        yield server
