"""One server per kind (ours, the real Triton) for each perf/tune test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.perf.targets import SERVER_KINDS, Target, serve


@pytest.fixture(scope="module", params=SERVER_KINDS)
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """One server per kind for a whole test module, explicit mode, every model loaded."""
    yield from serve(request.param, tmp_path_factory.mktemp(request.param), "explicit")


@pytest.fixture(scope="module", params=SERVER_KINDS)
def static_target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    """One server per kind in the default model-control mode (none): every model loaded at start,
    the repository load API refused."""
    yield from serve(request.param, tmp_path_factory.mktemp(f"static-{request.param}"))
