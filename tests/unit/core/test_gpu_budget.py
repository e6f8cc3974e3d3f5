"""The per-device GPU budget of the lifecycle manager (server/core/registry/lifecycle.py), over a
real VersionTable, the real placement and a fake NVML probe: where KIND_GPU instances go, what is
reserved and measured per device, and which model is evicted (only one on the device that is short).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from tritonclient.grpc.model_config_pb2 import ModelInstanceGroup

from server.core.placement import place_instances
from server.core.registry.lifecycle import LifecycleManager
from server.core.registry.memory import MIB, MemoryUsage
from server.core.registry.table import VersionTable
from server.errors import LoadError
from server.repository import ModelConfig
from server.vocabulary.instances import KIND_GPU
from tests.unit.core.lifecycle_fakes import FakeLoader, FakeVersion
from tests.unit.core.test_gpu_placement import FakeProbe

PER_INSTANCE = 60 * MIB


def measure(loaded: FakeVersion) -> MemoryUsage:
    usage = MemoryUsage({"cpu": MIB})
    for spec in loaded.instances:
        if spec.kind == KIND_GPU:
            usage.add(f"gpu{spec.device_id}", PER_INSTANCE)
    return usage


class GpuLoader(FakeLoader):
    """Places like ModelLoader (place_instances, then the policy), serves what was placed."""

    def __init__(self, table: VersionTable, tmp: Path, visible: list[int]) -> None:
        super().__init__(table, tmp)
        self.visible_gpus = visible
        self.placed: dict[str, list[int | None]] = {}

    async def load(self, name: str, gpus: list[int] | None = None) -> None:
        config = ModelConfig(name=name, backend="onnxruntime")
        config.instance_group.add(count=1, kind=ModelInstanceGroup.KIND_GPU, gpus=gpus or [])
        specs = place_instances(config, self.visible_gpus)
        try:
            await self.policy.before_load(name, config, specs)
            self.placed[name] = [spec.device_id for spec in specs]
            served = FakeVersion(name, config=ModelConfig(backend="onnxruntime"), instances=list(specs))
            self.table.ensure(name).slot(1).serve(served)  # type: ignore[arg-type]
        finally:
            self.policy.after_load(name)


def make(
    tmp_path: Path, free: dict[int, int | None], **kwargs: Any
) -> tuple[LifecycleManager, GpuLoader, VersionTable]:
    table = VersionTable()
    loader = GpuLoader(table, tmp_path, sorted(free))
    manager = LifecycleManager(measure=measure, gpu_probe=FakeProbe(free), room_wait_s=0.2, **kwargs)
    manager.attach(table, loader)  # type: ignore[arg-type]
    manager.starting = False
    for name in ("a", "b", "c", "d"):  # known from an earlier load: 60 MiB per GPU instance
        manager.measured[name] = MemoryUsage({"cpu": MIB, "gpu0": PER_INSTANCE})
        manager.gpu.per_instance[name] = PER_INSTANCE
    return manager, loader, table


def serving(table: VersionTable, name: str) -> FakeVersion:
    record = table.record(name)
    assert record is not None and record.versions[1].serving is not None
    return record.versions[1].serving  # type: ignore[return-value]


def test_without_a_budget_a_group_without_gpus_is_on_every_gpu_as_in_triton(tmp_path: Path) -> None:
    _, loader, table = make(tmp_path, {0: 40 << 30, 1: 40 << 30})
    asyncio.run(loader.load("a"))
    assert loader.placed["a"] == [0, 1]
    assert serving(table, "a").memory.by_device == {"cpu": MIB, "gpu0": PER_INSTANCE, "gpu1": PER_INSTANCE}


def test_a_full_gpu_is_left_out_without_a_budget(tmp_path: Path) -> None:
    _, loader, _ = make(tmp_path, {0: 10 * MIB, 1: 40 << 30})
    asyncio.run(loader.load("a"))
    assert loader.placed["a"] == [1]


def test_with_a_gpu_budget_models_are_packed_on_the_device_with_the_most_room(tmp_path: Path) -> None:
    manager, loader, _ = make(
        tmp_path, {0: 40 << 30, 1: 40 << 30}, budget={"gpu0": 100 * MIB, "gpu1": 100 * MIB}
    )

    async def run() -> None:
        await loader.load("a")
        await loader.load("b")

    asyncio.run(run())
    assert loader.placed == {"a": [0], "b": [1]}  # b: gpu0 has 40 MiB of its budget left, gpu1 100
    assert manager.used().by_device == {"cpu": 2 * MIB, "gpu0": PER_INSTANCE, "gpu1": PER_INSTANCE}
    families = {name: samples for name, _, _, samples in manager.metric_families()}
    assert ({"model": "b", "version": "1", "device": "gpu1"}, float(PER_INSTANCE)) in families[
        "tritonctl_model_memory_bytes"
    ]


def test_explicit_gpus_evict_the_lru_idle_model_of_that_device_only(tmp_path: Path) -> None:
    _, loader, table = make(
        tmp_path, {0: 40 << 30, 1: 40 << 30}, budget={"gpu0": 100 * MIB, "gpu1": 100 * MIB}
    )

    async def run() -> None:
        await loader.load("a", gpus=[1])  # the least recently used, but on gpu1
        await loader.load("b", gpus=[0])
        serving(table, "a").last_inference_ms = 0
        serving(table, "b").last_inference_ms = int(time.time() * 1000) + 1000
        await loader.load("c", gpus=[0])

    asyncio.run(run())
    assert loader.unloaded == ["b"]
    assert loader.placed["c"] == [0]


def test_a_load_that_cannot_fit_on_its_device_fails_naming_it(tmp_path: Path) -> None:
    _, loader, _ = make(
        tmp_path, {0: 40 << 30, 1: 40 << 30}, budget={"gpu0": 100 * MIB, "gpu1": 100 * MIB}, pinned=["a"]
    )

    async def run() -> None:
        await loader.load("a", gpus=[0])
        with pytest.raises(LoadError, match=r"no room for model 'c' \(needs about 60.0 MiB of gpu0"):
            await loader.load("c", gpus=[0])

    asyncio.run(run())
    assert loader.unloaded == []


def test_a_model_larger_than_a_device_budget_fails_clearly(tmp_path: Path) -> None:
    _, loader, _ = make(tmp_path, {0: 40 << 30}, budget={"gpu0": 50 * MIB})
    with pytest.raises(LoadError, match=r"'a' needs about 60.0 MiB of gpu0 memory, more than the whole"):
        asyncio.run(loader.load("a"))


def test_packing_prefers_the_device_where_eviction_makes_room(tmp_path: Path) -> None:
    _, loader, table = make(
        tmp_path, {0: 40 << 30, 1: 40 << 30}, budget={"gpu0": 100 * MIB, "gpu1": 70 * MIB}
    )

    async def run() -> None:
        await loader.load("a", gpus=[0])  # gpu0: 40 MiB left
        await loader.load("b", gpus=[1])  # gpu1: 10 MiB left, b idle and evictable
        serving(table, "a").pending = 1  # a busy: gpu0 cannot be freed
        await loader.load("c")

    asyncio.run(run())
    assert loader.placed["c"] == [1] and loader.unloaded == ["b"]


def test_a_never_measured_model_is_placed_by_its_files(tmp_path: Path) -> None:
    manager, loader, _ = make(tmp_path, {0: 40 << 30, 1: 40 << 30}, budget={"gpu0": 100 * MIB})
    (tmp_path / "new" / "1").mkdir(parents=True)
    (tmp_path / "new" / "1" / "model.onnx").write_bytes(b"\0" * 1000)
    asyncio.run(loader.load("new"))
    assert loader.placed["new"] == [1]  # gpu1: no budget, NVML's 40 GiB free
    assert manager.gpu.per_instance["new"] == PER_INSTANCE  # learnt from its measurement
