"""Fixtures for the worker integration tests (helpers live in pool.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.integration.workers.pool import Workers


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    loop = asyncio.new_event_loop()
    pool = Workers(loop, tmp_path_factory.mktemp("repo"))
    try:
        yield pool
    finally:
        pool.close_all()
        loop.close()
