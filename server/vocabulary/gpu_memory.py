"""GPU memory readings through NVML, behind one small seam (`GpuMemoryProbe`).

Everything that decides with GPU memory (placement of KIND_GPU instances, per-device accounting,
the per-device budget: server/core/registry/gpu_placement.py, memory.py, lifecycle.py, and the
host processes' load deltas: server/workers/host_process.py) reads it through a probe, so tests
pass a fake and a machine without NVML gets `NO_GPU` (every reading None: "cannot tell").

Devices are CUDA ordinals as this process sees them (gpus.py: NVML's order filtered and renumbered
by CUDA_VISIBLE_DEVICES); the NVML probe maps them to NVML handles by UUID. pynvml is imported
lazily, once, and only by `nvml_probe()`.

Known limit: NVML reports processes by their pid in the host's pid namespace. In a container without
`--pid=host`, `used_by_pid` then finds nothing (0) and the accounting falls back to its floor (the
model's files; memory.py).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from typing import Any, Protocol

from server.vocabulary.gpus import GpuInfo, discover_gpus


class GpuMemoryProbe(Protocol):
    """What the server reads of GPU memory. None: this reading is not available."""

    def devices(self) -> list[int]: ...

    def total_bytes(self, device: int) -> int | None: ...

    def free_bytes(self, device: int) -> int | None: ...

    def used_by_pid(self, pid: int, device: int) -> int | None: ...


class NoGpuProbe:
    """No NVML (no package, no driver, no GPU): nothing can be read."""

    def devices(self) -> list[int]:
        return []

    def total_bytes(self, device: int) -> int | None:
        return None

    def free_bytes(self, device: int) -> int | None:
        return None

    def used_by_pid(self, pid: int, device: int) -> int | None:
        return None


NO_GPU = NoGpuProbe()


class NvmlProbe:
    """Readings from NVML (initialised once, kept for the process's life). Any NVML error reads
    as None for that call: a driver hiccup never fails a load, it only leaves the reading out."""

    def __init__(self, pynvml: Any, gpus: list[GpuInfo]) -> None:
        self._nvml = pynvml
        self._gpus = {gpu.index: gpu for gpu in gpus}
        self._handles: dict[int, Any] = {}
        self._lock = threading.Lock()  # host processes read from instance threads

    def devices(self) -> list[int]:
        return sorted(self._gpus)

    def _handle(self, device: int) -> Any:
        handle = self._handles.get(device)
        if handle is None:
            gpu = self._gpus.get(device)
            if gpu is None:
                return None
            handle = self._handles[device] = self._nvml.nvmlDeviceGetHandleByUUID(gpu.uuid)
        return handle

    def _memory(self, device: int) -> Any:
        with self._lock, contextlib.suppress(Exception):
            handle = self._handle(device)
            return None if handle is None else self._nvml.nvmlDeviceGetMemoryInfo(handle)
        return None

    def total_bytes(self, device: int) -> int | None:
        info = self._memory(device)
        return None if info is None else int(info.total)

    def free_bytes(self, device: int) -> int | None:
        info = self._memory(device)
        return None if info is None else int(info.free)

    def used_by_pid(self, pid: int, device: int) -> int | None:
        with self._lock, contextlib.suppress(Exception):
            handle = self._handle(device)
            if handle is None:
                return None
            used = 0
            for process in self._nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if process.pid == pid:
                    if process.usedGpuMemory is None:  # NVML cannot tell (e.g. WDDM)
                        return None
                    used += int(process.usedGpuMemory)
            return used
        return None


_PROBE: list[GpuMemoryProbe] = []  # this process's, once made
_PROBE_LOCK = threading.Lock()


def nvml_probe() -> GpuMemoryProbe:
    """This process's probe: NVML's when it initialises and sees a GPU, else NO_GPU."""
    with _PROBE_LOCK:
        if not _PROBE:
            _PROBE.append(_make_probe())
        return _PROBE[0]


def _make_probe() -> GpuMemoryProbe:
    gpus = discover_gpus()  # [] without the package, the library or a device
    if not gpus:
        return NO_GPU
    try:
        import pynvml

        pynvml.nvmlInit()  # kept initialised (discover_gpus shuts its own init down)
    except Exception:
        return NO_GPU
    return NvmlProbe(pynvml, gpus)


def own_gpu_reader(probe: GpuMemoryProbe | None = None) -> Callable[[], int] | None:
    """For a process that sees one GPU (a host process of one device): a function returning the GPU
    memory NVML attributes to this process (0 when it cannot tell); None for a CPU-only process."""
    if not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return None
    found = probe if probe is not None else nvml_probe()
    if not found.devices():
        return None
    pid = os.getpid()

    def read() -> int:
        return found.used_by_pid(pid, 0) or 0

    return read
