"""GPU inventory without a GPU, and `--gpus` selection."""

from __future__ import annotations

import sys

import pytest

from server.errors import ConfigError
from server.vocabulary.gpus import (
    GpuInfo,
    _apply_cuda_visible_devices,
    cuda_visible_devices_value,
    discover_gpus,
    select_gpus,
)


def test_missing_pynvml_package_means_no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    assert discover_gpus() == []


def test_missing_nvml_library_means_no_gpus() -> None:
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError_LibraryNotFound:
        assert discover_gpus() == []
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVML driver library")


@pytest.mark.parametrize(
    ("selection", "available", "expected"),
    [
        ("all", [0, 1], [0, 1]),
        ("", [0, 1], [0, 1]),
        ("none", [0, 1], []),
        ("ALL", [], []),
        ("1", [0, 1], [1]),
        ("1,0", list(range(8)), [0, 1]),
        ("7, 3", list(range(8)), [3, 7]),
    ],
)
def test_select_gpus(selection: str, available: list[int], expected: list[int]) -> None:
    assert select_gpus(selection, available) == expected


def test_select_gpus_rejects_unknown_ids_and_words() -> None:
    with pytest.raises(ConfigError, match=r"--gpus names GPU 2, which does not exist \(GPUs: 0, 1\)"):
        select_gpus("0,2", [0, 1])
    with pytest.raises(ConfigError, match=r"GPUs: none"):
        select_gpus("0", [])
    with pytest.raises(ConfigError, match="expects 'all', 'none'"):
        select_gpus("some", [0])


def gpu(index: int) -> GpuInfo:
    return GpuInfo(index, str(index), "H100", f"GPU-{index}", 80 << 30)


def test_server_cuda_visible_devices_renumbers_like_cuda() -> None:
    gpus = [gpu(i) for i in range(4)]
    kept = _apply_cuda_visible_devices(gpus, "2,GPU-3")
    assert [(g.index, g.physical, g.uuid) for g in kept] == [(0, "2", "GPU-2"), (1, "GPU-3", "GPU-3")]
    assert cuda_visible_devices_value(1, kept) == "GPU-3"
    assert _apply_cuda_visible_devices(gpus, "") == []
    assert _apply_cuda_visible_devices(gpus, "1,9,2") == [GpuInfo(0, "1", "H100", "GPU-1", 80 << 30)]
    assert _apply_cuda_visible_devices(gpus, None) == gpus
