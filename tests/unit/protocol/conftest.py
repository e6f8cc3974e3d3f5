"""One HttpApp over a real DataPlane per test module (tests/unit/protocol/http_harness.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.protocol.http_harness import Http, serving, write_models


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Http]:
    repo = tmp_path_factory.mktemp("http_app_repo")
    write_models(repo)
    with serving(repo) as served:
        yield served
