"""One real server with the stateful toy models (tests/support/sequence_models.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.sequence_models import SERVER_MODELS as MODELS
from tests.support.server import RunningServer, start_server


@pytest.fixture(scope="package")
def seq_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("sequence_repo")
    for name, (writer, options) in MODELS.items():
        writer(repo, name, **options)
    with start_server(repo, timeout=180) as server:
        yield server
