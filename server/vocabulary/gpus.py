"""GPU inventory through NVML (the `nvidia-ml-py` package, module `pynvml`), and `--gpus` filtering.

No package, no driver library (NVMLError_LibraryNotFound) or any NVML failure means "no GPUs": the
server then serves CPU instances. pynvml is imported lazily so CPU-only start-up never pays for it.

Ordinals are CUDA's: when the server itself runs under CUDA_VISIBLE_DEVICES=2,3, NVML still sees
every GPU, so the inventory keeps only those and numbers them 0, 1 the way CUDA (and Triton) do;
`cuda_visible_devices_value` maps an ordinal back to what a worker's CUDA_VISIBLE_DEVICES must hold.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

from server.errors import ConfigError


@dataclass(frozen=True)
class GpuInfo:
    index: int  # CUDA ordinal as the server process sees it
    physical: str  # NVML index or the CUDA_VISIBLE_DEVICES entry it came from
    name: str
    uuid: str
    memory_total_bytes: int


def _import_pynvml() -> Any:
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


def discover_gpus() -> list[GpuInfo]:
    """The GPUs this process may use; [] when NVML or its driver library is missing."""
    pynvml = _import_pynvml()
    if pynvml is None:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...: no usable GPU
        return []
    try:
        found: dict[str, GpuInfo] = {}
        for nvml_index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(nvml_index)
            name = pynvml.nvmlDeviceGetName(handle)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            found[str(nvml_index)] = GpuInfo(
                index=nvml_index,
                physical=str(nvml_index),
                name=name.decode() if isinstance(name, bytes) else str(name),
                uuid=uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                memory_total_bytes=int(memory.total),
            )
    except pynvml.NVMLError:
        return []
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()
    return _apply_cuda_visible_devices(list(found.values()), os.environ.get("CUDA_VISIBLE_DEVICES"))


def _apply_cuda_visible_devices(gpus: list[GpuInfo], env_value: str | None) -> list[GpuInfo]:
    """Keep (and renumber) the GPUs named by the server's own CUDA_VISIBLE_DEVICES, if it is set."""
    if env_value is None:
        return gpus
    by_key = {gpu.physical: gpu for gpu in gpus} | {gpu.uuid: gpu for gpu in gpus}
    kept: list[GpuInfo] = []
    for entry in (part.strip() for part in env_value.split(",")):
        gpu = by_key.get(entry)
        if gpu is None:
            break  # CUDA stops at the first invalid entry
        kept.append(GpuInfo(len(kept), entry, gpu.name, gpu.uuid, gpu.memory_total_bytes))
    return kept


def select_gpus(selection: str, available: list[int]) -> list[int]:
    """Apply `--gpus all|none|0,1` to the available ordinals; ConfigError for ids that do not exist."""
    text = selection.strip().lower()
    if text in ("", "all"):
        return list(available)
    if text == "none":
        return []
    try:
        wanted = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--gpus expects 'all', 'none' or GPU ids like '0,1', not {selection!r}") from None
    missing = [gpu for gpu in wanted if gpu not in available]
    if missing:
        have = ", ".join(map(str, available)) if available else "none"
        raise ConfigError(
            f"--gpus names GPU {', '.join(map(str, missing))}, which does not exist (GPUs: {have})"
        )
    return sorted(set(wanted))


def cuda_visible_devices_value(ordinal: int, gpus: list[GpuInfo]) -> str:
    """What a worker's CUDA_VISIBLE_DEVICES must hold to see exactly GPU `ordinal`."""
    for gpu in gpus:
        if gpu.index == ordinal:
            return gpu.physical
    return str(ordinal)
