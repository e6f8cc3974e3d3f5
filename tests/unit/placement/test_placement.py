"""Instance placement over device lists of 0, 1, 2 and 8 GPUs (no GPU needed)."""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from tritonclient.grpc.model_config_pb2 import ModelConfig

from server.core.placement import place_instances
from server.errors import LoadError
from server.vocabulary.instances import InstanceSpec


def config(text: str, name: str = "m") -> ModelConfig:
    return text_format.Parse(f'name: "{name}"\n{text}', ModelConfig())


def summary(specs: list[InstanceSpec]) -> list[tuple[str, str, int | None]]:
    return [(s.name, s.kind, s.device_id) for s in specs]


GPU_LISTS = [[], [0], [0, 1], list(range(8))]


@pytest.mark.parametrize("gpus", GPU_LISTS)
def test_cpu_group_makes_count_instances_whatever_the_gpus(gpus: list[int]) -> None:
    specs = place_instances(config("instance_group [{ count: 3 kind: KIND_CPU }]"), gpus)
    assert summary(specs) == [
        ("m_0_0", "KIND_CPU", None),
        ("m_0_1", "KIND_CPU", None),
        ("m_0_2", "KIND_CPU", None),
    ]
    assert all(s.cuda_visible_devices == "" for s in specs)


@pytest.mark.parametrize("gpus", GPU_LISTS)
def test_no_instance_group_means_one_per_gpu_or_one_cpu(gpus: list[int]) -> None:
    specs = place_instances(config(""), gpus)
    if gpus:
        assert [(s.kind, s.device_id) for s in specs] == [("KIND_GPU", g) for g in gpus]
    else:
        assert summary(specs) == [("m_0_0", "KIND_CPU", None)]


@pytest.mark.parametrize("gpus", GPU_LISTS)
def test_kind_auto_uses_gpus_when_visible_else_falls_back_to_cpu(gpus: list[int]) -> None:
    specs = place_instances(config("instance_group [{ count: 2 kind: KIND_AUTO }]"), gpus)
    if gpus:
        assert len(specs) == 2 * len(gpus)
        assert {s.kind for s in specs} == {"KIND_GPU"}
        assert sorted(s.device_id for s in specs if s.device_id is not None) == sorted(gpus * 2)
    else:
        assert summary(specs) == [("m_0_0", "KIND_CPU", None), ("m_0_1", "KIND_CPU", None)]


@pytest.mark.parametrize("gpus", [[0], [0, 1], list(range(8))])
def test_kind_gpu_without_gpu_list_spreads_count_over_every_visible_gpu(gpus: list[int]) -> None:
    specs = place_instances(config("instance_group [{ count: 2 kind: KIND_GPU }]"), gpus)
    assert len(specs) == 2 * len(gpus)
    assert [s.device_id for s in specs] == gpus * 2
    assert [s.index for s in specs] == list(range(len(specs)))
    assert len({s.name for s in specs}) == len(specs)
    assert [s.cuda_visible_devices for s in specs] == [str(g) for g in gpus * 2]


def test_count_times_listed_gpus() -> None:
    specs = place_instances(
        config("instance_group [{ count: 2 kind: KIND_GPU gpus: [1, 3] }]"), list(range(8))
    )
    assert summary(specs) == [
        ("m_0_0", "KIND_GPU", 1),
        ("m_0_1", "KIND_GPU", 3),
        ("m_0_2", "KIND_GPU", 1),
        ("m_0_3", "KIND_GPU", 3),
    ]


def test_seed_example_one_instance_on_gpu0_and_one_on_gpu1() -> None:
    text = """
    instance_group [
      { count: 1 kind: KIND_GPU gpus: [0] },
      { count: 1 kind: KIND_GPU gpus: [1] }
    ]"""
    specs = place_instances(config(text, name="my_resnet"), [0, 1])
    assert summary(specs) == [("my_resnet_0_0", "KIND_GPU", 0), ("my_resnet_1_0", "KIND_GPU", 1)]
    assert [s.group_index for s in specs] == [0, 1]


def test_seed_example_two_instances_pinned_to_gpu0() -> None:
    specs = place_instances(config("instance_group [{ count: 2 kind: KIND_GPU gpus: [0] }]"), [0, 1])
    assert summary(specs) == [("m_0_0", "KIND_GPU", 0), ("m_0_1", "KIND_GPU", 0)]


def test_kind_gpu_without_any_gpu_is_a_load_error_naming_the_group() -> None:
    with pytest.raises(LoadError, match=r"instance group 'm_0' of model 'm' has kind KIND_GPU but no GPU"):
        place_instances(config("instance_group [{ kind: KIND_GPU }]"), [])


@pytest.mark.parametrize("gpus", [[0], [0, 1]])
def test_kind_gpu_naming_an_invisible_gpu_says_which(gpus: list[int]) -> None:
    with pytest.raises(LoadError, match=r"asks for GPU 5, which is not visible; visible GPUs: 0"):
        place_instances(config("instance_group [{ kind: KIND_GPU gpus: [0, 5] }]"), gpus)


def test_second_group_error_names_that_group() -> None:
    text = 'instance_group [{ kind: KIND_CPU }, { name: "fast" kind: KIND_GPU gpus: [2] }]'
    with pytest.raises(LoadError, match="instance group 'fast' of model 'm'"):
        place_instances(config(text), [0, 1])


def test_kind_auto_with_gpu_ids_falls_back_to_cpu_without_gpus() -> None:
    specs = place_instances(config("instance_group [{ kind: KIND_AUTO gpus: [0] }]"), [])
    assert summary(specs) == [("m_0_0", "KIND_CPU", None)]


def test_cpu_group_listing_gpus_is_an_error() -> None:
    with pytest.raises(LoadError, match="KIND_CPU but lists GPUs"):
        place_instances(config("instance_group [{ kind: KIND_CPU gpus: [0] }]"), [0])


def test_kind_model_keeps_devices_to_the_model() -> None:
    specs = place_instances(config("instance_group [{ count: 2 kind: KIND_MODEL }]"), [0, 1])
    assert summary(specs) == [("m_0_0", "KIND_MODEL", None), ("m_0_1", "KIND_MODEL", None)]
    assert specs[0].cuda_visible_devices is None


def test_named_group_and_mixed_groups() -> None:
    text = 'instance_group [{ name: "cpu_pool" count: 2 kind: KIND_CPU }, { count: 1 kind: KIND_GPU }]'
    specs = place_instances(config(text), [0, 1])
    assert summary(specs) == [
        ("cpu_pool_0", "KIND_CPU", None),
        ("cpu_pool_1", "KIND_CPU", None),
        ("m_1_0", "KIND_GPU", 0),
        ("m_1_1", "KIND_GPU", 1),
    ]


def test_count_zero_means_one_and_negative_is_an_error() -> None:
    assert len(place_instances(config("instance_group [{ kind: KIND_CPU }]"), [])) == 1
    with pytest.raises(LoadError, match="count -1"):
        place_instances(config("instance_group [{ count: -1 kind: KIND_CPU }]"), [])
