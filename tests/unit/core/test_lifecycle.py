"""The lifecycle manager (server/core/registry/lifecycle.py) over a real VersionTable.

Loaded versions are stand-ins with what the manager reads (pending requests, last inference,
config); their memory comes from a measure function the test sets, so accounting, LRU order,
pinning and the budget's refusals are exact.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from server.core.registry.lifecycle import EVICTED_REASON, IDLE_REASON, LifecycleManager
from server.core.registry.memory import MIB, MemoryUsage, parse_budget
from server.core.registry.table import ModelState, VersionTable
from server.errors import ConfigError, LoadError
from tests.unit.core.lifecycle_fakes import FakeLoader, FakeVersion

SIZES = {"a": 30 * MIB, "b": 30 * MIB, "c": 30 * MIB, "big": 200 * MIB}


def make(tmp_path: Path, **kwargs: Any) -> tuple[LifecycleManager, FakeLoader, VersionTable]:
    table = VersionTable()
    loader = FakeLoader(table, tmp_path)
    manager = LifecycleManager(
        measure=lambda loaded: MemoryUsage({"cpu": SIZES[loaded.name]}), room_wait_s=0.2, **kwargs
    )
    manager.attach(table, loader)  # type: ignore[arg-type]
    manager.starting = False
    manager.measured.update({name: MemoryUsage({"cpu": size}) for name, size in SIZES.items()})
    return manager, loader, table


def serving(table: VersionTable, name: str) -> FakeVersion:
    record = table.record(name)
    assert record is not None and record.versions[1].serving is not None
    return record.versions[1].serving  # type: ignore[return-value]


def test_accounting_counts_what_loaded_models_hold(tmp_path: Path) -> None:
    manager, loader, table = make(tmp_path, budget={"cpu": 100 * MIB})

    async def run() -> None:
        await loader.load("a")
        await loader.load("b")

    asyncio.run(run())
    assert manager.used().by_device == {"cpu": 60 * MIB}
    assert serving(table, "a").memory.by_device == {"cpu": 30 * MIB}
    families = {name: samples for name, _, _, samples in manager.metric_families()}
    assert families["tritonctl_model_memory_used_bytes"] == [({"device": "cpu"}, 60.0 * MIB)]


def test_the_least_recently_used_idle_model_is_evicted_first(tmp_path: Path) -> None:
    manager, loader, table = make(tmp_path, budget={"cpu": 70 * MIB})

    async def run() -> None:
        await loader.load("a")
        await loader.load("b")
        now_ms = int(time.time() * 1000)
        serving(table, "a").last_inference_ms = now_ms + 1000  # a used after b's load
        await loader.load("c")

    asyncio.run(run())
    assert loader.unloaded == ["b"]
    record = table.record("b")
    assert record is not None and record.loadable == EVICTED_REASON
    assert record.versions[1].state is ModelState.UNAVAILABLE and record.versions[1].reason == EVICTED_REASON
    assert manager.counters.evictions_budget == 1
    assert table.all_ready()  # an evicted model does not make the server unready


def test_residency_follows_unloads_and_instances_that_gave_up(tmp_path: Path) -> None:
    """The manager keeps its residents and their total as loads and unloads end (it does not walk
    every record per decision); a model that stopped serving without an unload is found stale
    when a load is short of room, and neither counts nor is evicted."""
    manager, loader, table = make(tmp_path, budget={"cpu": 70 * MIB})

    async def run() -> None:
        await loader.load("a")
        await loader.load("b")
        assert manager.used().by_device == {"cpu": 60 * MIB}
        await loader.unload("a")  # an explicit unload (the API), not an eviction
        assert manager.used().by_device == {"cpu": 30 * MIB}
        record = table.record("b")
        assert record is not None
        record.versions[1].serving = None  # closed without an unload (a safety net: not a path today)
        await loader.load("c")
        await loader.load("a")  # short of room: the stale b is found and dropped, nothing evicted
        assert manager.used().by_device == {"cpu": 60 * MIB}

    asyncio.run(run())
    assert loader.unloaded == ["a"]


def test_one_ranking_serves_many_evictions_in_lru_order(tmp_path: Path) -> None:
    """Each load on demand evicts only what it needs, least recently used first. The residents are
    ranked once for many such loads; a model used since the ranking is passed over (it is recent
    now), and when the ranking runs out the residents are ranked again."""
    table = VersionTable()
    loader = FakeLoader(table, tmp_path)
    manager = LifecycleManager(measure=lambda loaded: MemoryUsage({"cpu": MIB}), room_wait_s=0.2)
    manager.attach(table, loader)  # type: ignore[arg-type]
    manager.budget = {"cpu": 4 * MIB}
    names = ["m0", "m1", "m2", "m3"]
    newcomers = ["n0", "n1", "n2", "n3", "n4"]
    manager.measured.update({name: MemoryUsage({"cpu": MIB}) for name in [*names, *newcomers]})

    async def run() -> None:
        for name in names:
            await loader.load(name)
        manager.starting = False
        await loader.load("n0")
        assert loader.unloaded == ["m0"]
        serving(table, "m1").last_inference_ms = int(time.time() * 1000) + 1000  # m1 serves a request
        await loader.load("n1")
        assert loader.unloaded == ["m0", "m2"]  # m1 was used since the ranking: m2 is older now
        await loader.load("n2")
        assert loader.unloaded == ["m0", "m2", "m3"]
        assert manager._ranking.rankings == 1  # three evictions, one ranking
        await loader.load("n3")  # the ranking ran out: ranked again, n0 (loaded first) goes
        assert loader.unloaded == ["m0", "m2", "m3", "n0"]
        assert manager._ranking.rankings == 2
        assert manager.used().by_device == {"cpu": 4 * MIB}

    asyncio.run(run())


def test_pinned_and_busy_models_are_never_evicted(tmp_path: Path) -> None:
    _, loader, table = make(tmp_path, budget={"cpu": 70 * MIB}, pinned=["a"])

    async def run() -> None:
        await loader.load("a")
        await loader.load("b")
        serving(table, "b").pending = 1  # a request queued or executing
        with pytest.raises(LoadError, match="pinned, busy or loading"):
            await loader.load("c")

    asyncio.run(run())
    assert loader.unloaded == []


def test_a_load_waits_for_a_busy_model_to_become_idle(tmp_path: Path) -> None:
    manager, loader, table = make(tmp_path, budget={"cpu": 40 * MIB})
    manager.room_wait_s = 5.0

    async def run() -> None:
        await loader.load("a")
        serving(table, "a").pending = 1
        load = asyncio.ensure_future(loader.load("b"))
        await asyncio.sleep(0.1)
        assert not load.done() and loader.unloaded == []  # waiting: "a" is busy
        serving(table, "a").pending = 0
        await asyncio.wait_for(load, 5.0)

    asyncio.run(run())
    assert loader.unloaded == ["a"]


def test_a_model_larger_than_the_whole_budget_fails_clearly(tmp_path: Path) -> None:
    _, loader, _ = make(tmp_path, budget={"cpu": 100 * MIB})
    with pytest.raises(LoadError, match=r"'big' needs about 200.0 MiB of cpu memory, more than the whole"):
        asyncio.run(loader.load("big"))
    assert loader.unloaded == []


def test_start_up_defers_what_does_not_fit_instead_of_evicting(tmp_path: Path) -> None:
    manager, loader, _ = make(tmp_path, budget={"cpu": 70 * MIB})
    manager.starting = True

    async def run() -> None:
        await loader.load("a")
        await loader.load("b")
        with pytest.raises(LoadError, match="deferred"):
            await loader.load("c")

    asyncio.run(run())
    assert manager.deferred == {"c"} and loader.unloaded == []


def test_idle_models_are_unloaded_pinned_and_busy_ones_stay(tmp_path: Path) -> None:
    manager, loader, table = make(tmp_path, idle_unload_s=0.05, pinned=["a"])

    async def run() -> list[str]:
        for name in ("a", "b", "c"):
            await loader.load(name)
        serving(table, "c").pending = 2
        await asyncio.sleep(0.1)
        return await manager.unload_idle()

    assert asyncio.run(run()) == ["b"]
    record = table.record("b")
    assert record is not None and record.loadable == IDLE_REASON
    assert manager.counters.evictions_idle == 1


def test_budget_spelling() -> None:
    totals = {"cpu": 16 << 30, "gpu0": 80 << 30}
    assert parse_budget("cpu=8GiB,gpu0=50%", totals) == {"cpu": 8 << 30, "gpu0": 40 << 30}
    assert parse_budget("cpu=512MB", totals) == {"cpu": 512_000_000}
    for bad in ("cpu", "ram=1GiB", "cpu=lots", "gpu1=50%", "cpu=0", "cpu=150%"):
        with pytest.raises(ConfigError, match="--model-memory-budget"):
            parse_budget(bad, totals)
