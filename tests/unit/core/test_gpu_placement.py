"""KIND_GPU placement on the device with room (server/core/registry/gpu_placement.py): the pure
choices, the group rewrite, and the GpuPlacer's room arithmetic over a fake NVML probe."""

from __future__ import annotations

from tritonclient.grpc.model_config_pb2 import ModelInstanceGroup

from server.core.placement import place_instances
from server.core.registry.gpu_placement import (
    DeviceRoom,
    GpuPlacer,
    choose_devices,
    replace_unlisted_groups,
    with_gpu_need,
)
from server.core.registry.memory import MIB, MemoryUsage
from server.repository import ModelConfig
from server.vocabulary.instances import KIND_CPU, KIND_GPU


class FakeProbe:
    """NVML as the tests set it: free bytes per device (None: unreadable)."""

    def __init__(self, free: dict[int, int | None]) -> None:
        self.free = free

    def devices(self) -> list[int]:
        return sorted(self.free)

    def total_bytes(self, device: int) -> int | None:
        return 80 << 30

    def free_bytes(self, device: int) -> int | None:
        return self.free.get(device)

    def used_by_pid(self, pid: int, device: int) -> int | None:
        return None


def gpu_config(*groups: tuple[int, list[int]]) -> ModelConfig:
    config = ModelConfig(name="m", backend="onnxruntime")
    for count, gpus in groups:
        config.instance_group.add(count=count, kind=ModelInstanceGroup.KIND_GPU, gpus=gpus)
    return config


# -- choose_devices --------------------------------------------------------------------------------


def test_without_a_gpu_budget_every_gpu_with_room_gets_the_group_as_in_triton() -> None:
    rooms = [DeviceRoom(0, 100 * MIB), DeviceRoom(1, 100 * MIB)]
    assert choose_devices(rooms, 50 * MIB, pack=False) == [0, 1]
    short = [DeviceRoom(0, 10 * MIB), DeviceRoom(1, 100 * MIB), DeviceRoom(2, None)]
    assert choose_devices(short, 50 * MIB, pack=False) == [1, 2]  # unreadable: not known to be short
    none_fit = [DeviceRoom(0, 10 * MIB), DeviceRoom(1, 20 * MIB)]
    assert choose_devices(none_fit, 50 * MIB, pack=False) == [
        0,
        1,
    ]  # Triton's placement, the framework decides


def test_with_a_gpu_budget_the_group_goes_to_the_one_device_with_the_most_room() -> None:
    rooms = [DeviceRoom(0, 60 * MIB), DeviceRoom(1, 90 * MIB), DeviceRoom(2, 90 * MIB)]
    assert choose_devices(rooms, 50 * MIB, pack=True) == [1]  # ties: the lowest ordinal
    assert choose_devices([DeviceRoom(0, None), DeviceRoom(1, 60 * MIB)], 50 * MIB, pack=True) == [1]


def test_short_everywhere_it_picks_where_eviction_makes_room_else_the_most_room() -> None:
    rooms = [DeviceRoom(0, 40 * MIB, reclaimable=0), DeviceRoom(1, 10 * MIB, reclaimable=60 * MIB)]
    assert choose_devices(rooms, 50 * MIB, pack=True) == [1]
    hopeless = [DeviceRoom(0, 40 * MIB), DeviceRoom(1, 10 * MIB, reclaimable=20 * MIB)]
    assert choose_devices(hopeless, 50 * MIB, pack=True) == [0]
    assert choose_devices([], 50 * MIB, pack=True) == []


# -- the group rewrite -----------------------------------------------------------------------------


def test_explicit_gpus_are_kept_and_count_goes_on_each_listed_gpu() -> None:
    config = gpu_config((2, [0, 1]))
    specs = place_instances(config, [0, 1, 2])
    placed = replace_unlisted_groups(config, specs, lambda count: [2])
    assert placed == specs
    assert [(s.name, s.device_id) for s in placed] == [("m_0_0", 0), ("m_0_1", 1), ("m_0_2", 0), ("m_0_3", 1)]


def test_a_group_without_gpus_is_replaced_on_the_chosen_devices_with_its_count() -> None:
    config = gpu_config((2, []), (1, [1]))
    config.instance_group.add(count=1, kind=ModelInstanceGroup.KIND_CPU)
    specs = place_instances(config, [0, 1])
    asked: list[int] = []

    def choose(count: int) -> list[int]:
        asked.append(count)
        return [1]

    placed = replace_unlisted_groups(config, specs, choose)
    assert asked == [2]  # instances per device
    assert [(s.name, s.kind, s.device_id, s.group_index) for s in placed] == [
        ("m_0_0", KIND_GPU, 1, 0),
        ("m_0_1", KIND_GPU, 1, 0),
        ("m_1_0", KIND_GPU, 1, 1),
        ("m_2_0", KIND_CPU, None, 2),
    ]


def test_the_default_group_of_a_config_without_instance_group_is_placed_too() -> None:
    config = ModelConfig(name="m", backend="onnxruntime")
    specs = place_instances(config, [0, 1])  # KIND_AUTO -> one instance per GPU
    placed = replace_unlisted_groups(config, specs, lambda count: [1])
    assert [(s.name, s.device_id) for s in placed] == [("m_0_0", 1)]


def test_with_gpu_need_rekeys_the_gpu_part_to_the_placed_devices() -> None:
    specs = place_instances(gpu_config((2, [1])), [0, 1])
    usage = with_gpu_need(MemoryUsage({"cpu": 5, "gpu0": 100}), specs, 30)
    assert usage.by_device == {"cpu": 5, "gpu1": 60}


# -- GpuPlacer: room = NVML free and budget left, minus loads placed but not loaded ----------------


def place(
    placer: GpuPlacer, name: str, *, budget: dict[str, int], used: MemoryUsage | None = None
) -> list[int]:
    config = gpu_config((1, []))
    specs = place_instances(config, [0, 1])
    estimate = MemoryUsage({"gpu0": 40 * MIB, "gpu1": 40 * MIB})  # 40 MiB per instance
    placed = placer.place(
        name,
        config,
        specs,
        estimate=estimate,
        visible=[0, 1],
        budget=budget,
        used=used or MemoryUsage(),
        reserved=(),
        reclaimable=lambda device: 0,
    )
    return [spec.device_id for spec in placed if spec.device_id is not None]


def test_loads_under_way_count_against_the_room_nvml_still_shows_free() -> None:
    placer = GpuPlacer(FakeProbe({0: 100 * MIB, 1: 90 * MIB}))
    budget = {"gpu0": 1 << 40}  # a GPU budget: pack mode
    assert place(placer, "a", budget=budget) == [0]
    assert placer.pending["a"].by_device == {"gpu0": 40 * MIB}
    assert place(placer, "b", budget=budget) == [1]  # gpu0: 100 - 40 in flight < 90
    placer.loaded("a", gpu_used=40 * MIB, instances=1)
    assert "a" not in placer.pending and placer.per_instance["a"] == 40 * MIB


def test_the_budget_left_on_a_device_limits_its_room_below_nvml_free() -> None:
    placer = GpuPlacer(FakeProbe({0: 70 << 30, 1: 70 << 30}))
    budget = {"gpu0": 100 * MIB, "gpu1": 100 * MIB}
    assert place(placer, "a", budget=budget, used=MemoryUsage({"gpu0": 10 * MIB, "gpu1": 50 * MIB})) == [0]


def test_without_nvml_the_budget_alone_decides_and_without_either_triton_placement_stays() -> None:
    placer = GpuPlacer(FakeProbe({}))
    assert place(placer, "a", budget={"gpu0": 50 * MIB, "gpu1": 100 * MIB}) == [1]
    assert place(GpuPlacer(FakeProbe({})), "b", budget={}) == [0, 1]


def test_a_measured_model_uses_its_measured_need_per_instance() -> None:
    placer = GpuPlacer(FakeProbe({0: 100 * MIB, 1: 300 * MIB}))
    placer.loaded("a", gpu_used=500 * MIB, instances=2)
    assert placer.per_instance["a"] == 250 * MIB
    assert place(placer, "a", budget={}) == [1]  # gpu0 has no room for 250 MiB
