"""A server with `--allow-client-shm` over add_sub and strings models, and a Regions fixture that
destroys what a test made, even when it fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.shared_memory.helpers import Regions
from tests.support.models import write_python_model
from tests.support.server import RunningServer, start_server


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shm-repo")
    write_python_model(root, "add_sub", "add_sub", dims=[16], max_batch_size=8)
    write_python_model(root, "strings", "strings", dims=[-1], max_batch_size=0)
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[RunningServer]:
    with start_server(repo, "--allow-client-shm=true") as running:
        yield running


@pytest.fixture
def regions(server: RunningServer) -> Iterator[Regions]:
    made = Regions(server)
    try:
        yield made
    finally:
        made.close()
