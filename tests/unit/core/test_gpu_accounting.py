"""GPU memory accounting without a GPU: the NVML probe over a fake pynvml, the "no NVML" path, and
memory.measure_version's per-device attribution of hosted and process-per-instance GPU loads."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tritonclient.grpc import service_pb2

from server.core.registry.memory import MIB, MemoryUsage, add_memory_usage, device_totals, measure_version
from server.vocabulary import gpu_memory
from server.vocabulary.gpu_memory import NO_GPU, NvmlProbe, own_gpu_reader
from server.vocabulary.gpus import GpuInfo
from server.vocabulary.instances import KIND_CPU, KIND_GPU, InstanceSpec


class FakeNvml:
    """The few pynvml calls the probe makes; devices by UUID, processes per device."""

    class NVMLError(Exception):
        pass

    def __init__(self) -> None:
        self.memory = {"GPU-a": (80 * MIB, 30 * MIB), "GPU-b": (80 * MIB, 70 * MIB)}  # total, free
        self.processes: dict[str, list[Any]] = {"GPU-a": [], "GPU-b": []}

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:
        if uuid not in self.memory:
            raise self.NVMLError("not found")
        return uuid

    def nvmlDeviceGetMemoryInfo(self, handle: str) -> Any:
        total, free = self.memory[handle]
        return SimpleNamespace(total=total, free=free, used=total - free)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: str) -> list[Any]:
        return self.processes[handle]


def probe_over(nvml: FakeNvml) -> NvmlProbe:
    # CUDA ordinals 0, 1 are NVML's devices GPU-b, GPU-a (CUDA_VISIBLE_DEVICES reordered them)
    gpus = [GpuInfo(0, "1", "H200", "GPU-b", 80 * MIB), GpuInfo(1, "0", "H200", "GPU-a", 80 * MIB)]
    return NvmlProbe(nvml, gpus)


def test_the_nvml_probe_reads_by_cuda_ordinal() -> None:
    nvml = FakeNvml()
    probe = probe_over(nvml)
    assert probe.devices() == [0, 1]
    assert probe.free_bytes(0) == 70 * MIB and probe.free_bytes(1) == 30 * MIB
    assert probe.total_bytes(1) == 80 * MIB
    assert probe.free_bytes(7) is None  # not a device of ours
    nvml.processes["GPU-a"] = [
        SimpleNamespace(pid=42, usedGpuMemory=5 * MIB),
        SimpleNamespace(pid=42, usedGpuMemory=1 * MIB),
        SimpleNamespace(pid=43, usedGpuMemory=9 * MIB),
    ]
    assert probe.used_by_pid(42, 1) == 6 * MIB
    assert probe.used_by_pid(42, 0) == 0  # not listed on that device
    nvml.processes["GPU-a"] = [SimpleNamespace(pid=42, usedGpuMemory=None)]
    assert probe.used_by_pid(42, 1) is None  # NVML cannot tell


def test_an_nvml_error_reads_as_unknown_never_as_a_failure() -> None:
    nvml = FakeNvml()
    probe = probe_over(nvml)

    def broken(handle: str) -> Any:
        raise FakeNvml.NVMLError("GPU is lost")

    nvml.nvmlDeviceGetMemoryInfo = broken  # type: ignore[method-assign]
    nvml.nvmlDeviceGetComputeRunningProcesses = broken  # type: ignore[method-assign]
    assert probe.free_bytes(0) is None and probe.used_by_pid(1, 0) is None


def test_without_nvml_there_is_no_gpu_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    monkeypatch.setattr(gpu_memory, "_PROBE", [])
    assert gpu_memory.nvml_probe() is NO_GPU
    assert NO_GPU.devices() == [] and NO_GPU.free_bytes(0) is None and NO_GPU.used_by_pid(1, 0) is None
    assert set(device_totals(NO_GPU)) == {"cpu"}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert own_gpu_reader(NO_GPU) is None  # a host without NVML reports no GPU delta


def test_a_cpu_host_has_no_gpu_reader_and_a_gpu_host_reads_its_own_pid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nvml = FakeNvml()
    probe = probe_over(nvml)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert own_gpu_reader(probe) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    import os

    nvml.processes["GPU-b"] = [SimpleNamespace(pid=os.getpid(), usedGpuMemory=3 * MIB)]
    reader = own_gpu_reader(probe)
    assert reader is not None and reader() == 3 * MIB


# -- measure_version --------------------------------------------------------------------------------


class PidProbe:
    def __init__(self, used: dict[tuple[int, int], int | None]) -> None:
        self.used = used

    def devices(self) -> list[int]:
        return [0, 1]

    def total_bytes(self, device: int) -> int | None:
        return None

    def free_bytes(self, device: int) -> int | None:
        return None

    def used_by_pid(self, pid: int, device: int) -> int | None:
        return self.used.get((pid, device))


def version(tmp_path: Path, specs: list[InstanceSpec], processes: list[Any], files: int = 1000) -> Any:
    (tmp_path / "m" / "1").mkdir(parents=True, exist_ok=True)
    (tmp_path / "m" / "1" / "model.onnx").write_bytes(b"\0" * files)
    channels = [
        SimpleNamespace(instance_name=spec.name, process=process)
        for spec, process in zip(specs, processes, strict=True)
    ]
    return SimpleNamespace(channels=channels, instances=specs, model_dir=tmp_path / "m", version=1)


def test_a_hosted_gpu_load_is_its_host_delta_on_its_device_and_at_least_its_files(tmp_path: Path) -> None:
    specs = [InstanceSpec("m_0_0", KIND_GPU, 1, 0, 0), InstanceSpec("m_0_1", KIND_GPU, 0, 0, 1)]
    hosted = [
        SimpleNamespace(pid=10, memory_bytes=2 * MIB, gpu_memory_bytes=300 * MIB),
        SimpleNamespace(pid=11, memory_bytes=0, gpu_memory_bytes=0),  # the allocator reused freed memory
    ]
    usage = measure_version(version(tmp_path, specs, hosted), PidProbe({}))
    # CPU: the host deltas without the files floor (the weights are on the GPU)
    assert usage.by_device == {"cpu": 2 * MIB, "gpu1": 300 * MIB, "gpu0": 1000}


def test_a_hosted_cpu_load_keeps_its_files_floor(tmp_path: Path) -> None:
    specs = [InstanceSpec("m_0_0", KIND_CPU, None, 0, 0)]
    usage = measure_version(
        version(tmp_path, specs, [SimpleNamespace(pid=10, memory_bytes=10)]), PidProbe({})
    )
    assert usage.by_device == {"cpu": 1000}


def test_a_gpu_worker_process_reports_what_nvml_sees_for_its_pid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.core.registry import memory

    monkeypatch.setattr(memory, "process_pss", lambda pid: 20 * MIB)
    specs = [InstanceSpec("m_0_0", KIND_GPU, 1, 0, 0), InstanceSpec("m_0_1", KIND_GPU, 0, 0, 1)]
    workers = [SimpleNamespace(pid=10), SimpleNamespace(pid=11)]
    loaded = version(tmp_path, specs, workers)
    usage = measure_version(loaded, PidProbe({(10, 1): 500 * MIB, (11, 0): None}))
    assert usage.by_device == {"cpu": 40 * MIB, "gpu1": 500 * MIB}  # pid 11: NVML cannot tell
    assert measure_version(loaded, NO_GPU).by_device == {"cpu": 40 * MIB}  # no NVML: no GPU entry


def test_a_reaped_worker_process_is_not_measured_its_pid_may_be_anothers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.core.registry import memory

    read: list[int] = []

    def pss(pid: int) -> int:
        read.append(pid)
        return 20 * MIB

    monkeypatch.setattr(memory, "process_pss", pss)
    specs = [InstanceSpec("m_0_0", KIND_GPU, 1, 0, 0), InstanceSpec("m_0_1", KIND_CPU, None, 0, 1)]
    # a killed worker (reaped: its status is known) and a live one (a Popen reads None until reaped)
    workers = [SimpleNamespace(pid=10, returncode=-9), SimpleNamespace(pid=11, returncode=None)]
    usage = measure_version(version(tmp_path, specs, workers), PidProbe({(10, 1): 500 * MIB}))
    assert usage.by_device == {"cpu": 20 * MIB} and read == [11]


def test_statistics_report_gpu_memory_as_type_gpu_with_its_id() -> None:
    message = service_pb2.ModelStatistics()
    add_memory_usage(message, MemoryUsage({"cpu": 5, "gpu1": 7}))
    assert [(u.type, u.id, u.byte_size) for u in message.memory_usage] == [("CPU", 0, 5), ("GPU", 1, 7)]
