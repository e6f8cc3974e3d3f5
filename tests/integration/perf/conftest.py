"""Servers for the perf/tune tests, shared by the whole package (starting one costs seconds):
ours and the real Triton (skipped when not installed) in explicit model-control mode, and ours in
the default mode, whose repository API refuses loads."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.perf.targets import SERVER_KINDS, Target, serve


@pytest.fixture(scope="package", params=SERVER_KINDS)
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """One server per kind, explicit mode, every model loaded."""
    yield from serve(request.param, tmp_path_factory.mktemp(request.param), "explicit")


@pytest.fixture(scope="package")
def static_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """Our server in the default model-control mode (none): models loaded at start, loads refused."""
    yield from serve("ours", tmp_path_factory.mktemp("static"))
