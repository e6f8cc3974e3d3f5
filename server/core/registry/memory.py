"""Memory per model version: measured after a load, estimated before one, and the budget's words.

Measured (`measure_version`), per instance:
- an instance in a process of its own: the process's PSS (/proc/PID/smaps_rollup), so pages it
  shares with other workers (libraries, the interpreter) count once across them;
- an instance of a shared host (server/workers/host.py): the resident memory its load added to the
  host (loads in a host are serialised, so the difference is the model's);
- an in-process instance (inline / thread): the size of its model files (nothing better to read);
- a KIND_GPU instance in a process of its own also reports the GPU memory NVML sees for its pid;
- a KIND_GPU instance of a shared host: the GPU memory its load added to the host's pid on its
  device (measured by the host around the load, loads serialised: host_process.py), but at least
  its files (an allocator's cache, or NVML without the host's pid namespace, reads ~0); its CPU
  part is what the load added to the host's resident memory, without the files floor (the weights
  live on the GPU).
GPU readings go through a `GpuMemoryProbe` (server/vocabulary/gpu_memory.py); "gpuN" is CUDA's
ordinal N as the server sees it. The first model on a device's host also pays its CUDA context.

Estimated (`estimate_load`): the last measurement of the same model if there is one, else its
files' size per instance plus a per-instance overhead (a process costs an interpreter, a hosted
instance a thread and its arenas' bookkeeping).

`parse_budget("cpu=8GiB,gpu0=70%")` reads `--model-memory-budget`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.errors import ConfigError
from server.repository.folder_walk import walk_folder
from server.vocabulary.gpu_memory import GpuMemoryProbe, nvml_probe
from server.vocabulary.instances import KIND_GPU, InstanceSpec

MIB = 1 << 20
# A worker process's own PSS beyond its model: ~11 MiB forked from a warm template (20 python
# identity models; benchmarks/many_models.py), ~26 MiB spawned (TRITONCTL_FORK_WORKERS=0).
PROCESS_OVERHEAD = 12 * MIB
HOSTED_OVERHEAD = 64 << 10  # a thread, its sockets and arena bookkeeping (the arenas grow on use)
CPU = "cpu"


@dataclass
class MemoryUsage:
    """Bytes per device: "cpu", and "gpu0", "gpu1"... for GPU memory."""

    by_device: dict[str, int] = field(default_factory=dict)

    @property
    def cpu(self) -> int:
        return self.by_device.get(CPU, 0)

    def add(self, device: str, size: int) -> None:
        self.by_device[device] = self.by_device.get(device, 0) + max(0, int(size))

    def __iadd__(self, other: MemoryUsage) -> MemoryUsage:
        for device, size in other.by_device.items():
            self.add(device, size)
        return self

    def total(self) -> int:
        return sum(self.by_device.values())

    def describe(self) -> str:
        return ", ".join(f"{device}={format_bytes(size)}" for device, size in sorted(self.by_device.items()))


def format_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


# -- measuring ------------------------------------------------------------------------------------


def process_pss(pid: int) -> int:
    """A process's proportional set size in bytes (0 when it cannot be read)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as rollup:
            for line in rollup:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0
    return 0


def model_files_size(model_dir: Path, version: int | None = None) -> int:
    """Bytes of a version's folder (or of the whole model folder)."""
    root = model_dir / str(version) if version is not None else model_dir
    return sum(entry.size for entry in walk_folder(root) if not entry.is_dir)


def measure_version(loaded: Any, gpu_probe: GpuMemoryProbe | None = None) -> MemoryUsage:
    """What a loaded version's instances hold now (see the module docstring). `gpu_probe`: NVML's
    (made on first need: a version without KIND_GPU instances never imports pynvml)."""
    usage = MemoryUsage()
    files: int | None = None
    specs = {spec.name: spec for spec in getattr(loaded, "instances", ())}
    for channel in loaded.channels:
        worker = getattr(channel, "channel", channel)  # an InstanceSupervisor's current channel
        process = getattr(worker, "process", None)
        if process is None:  # in-process (inline / thread): its model files
            if files is None:
                files = model_files_size(loaded.model_dir, loaded.version)
            usage.add(CPU, files)
            continue
        if getattr(process, "returncode", None) is not None:
            # Reaped (a Popen's status is set by the wait that reaps it; a forked worker's once its
            # template reported reaping it): it holds nothing, and its pid may name another process.
            continue
        spec = specs.get(getattr(worker, "instance_name", ""))
        on_gpu = spec is not None and spec.kind == KIND_GPU and spec.device_id is not None
        hosted = getattr(process, "memory_bytes", None)
        if hosted is not None:
            # What the load added to the host, but at least its files: the allocator often reuses
            # memory an evicted model freed, and a delta of ~0 would make it look free to keep.
            if files is None:
                files = model_files_size(loaded.model_dir, loaded.version)
            if on_gpu:
                assert spec is not None and spec.device_id is not None
                gpu_added = int(getattr(process, "gpu_memory_bytes", 0) or 0)
                usage.add(CPU, hosted)
                usage.add(f"gpu{spec.device_id}", max(gpu_added, files))
            else:
                usage.add(CPU, max(hosted, files))
            continue
        usage.add(CPU, process_pss(process.pid))
        if on_gpu:
            assert spec is not None and spec.device_id is not None
            probe = gpu_probe if gpu_probe is not None else nvml_probe()
            used = probe.used_by_pid(process.pid, spec.device_id)
            if used is not None:  # None: NVML cannot tell (no NVML, a driver error)
                usage.add(f"gpu{spec.device_id}", used)
    return usage


# -- estimating -----------------------------------------------------------------------------------


def estimate_load(
    model_dir: Path, versions: list[int], specs: list[InstanceSpec], hosted: bool, in_process: bool
) -> MemoryUsage:
    """A first guess for a model never measured: files x instances + overhead per instance."""
    usage = MemoryUsage()
    for version in versions:
        files = model_files_size(model_dir, version)
        for spec in specs:
            if spec.kind == KIND_GPU and spec.device_id is not None:
                usage.add(f"gpu{spec.device_id}", files)
                usage.add(CPU, HOSTED_OVERHEAD if hosted else PROCESS_OVERHEAD)
            else:
                overhead = 0 if in_process else HOSTED_OVERHEAD if hosted else PROCESS_OVERHEAD
                usage.add(CPU, files + overhead)
    return usage


# -- the budget ------------------------------------------------------------------------------------

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1 << 10,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1 << 20,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1 << 30,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1 << 40,
}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z%]*)\s*$")
_DEVICE = re.compile(r"^(cpu|gpu[0-9]+)$")


def parse_budget(text: str, totals: dict[str, int]) -> dict[str, int]:
    """`cpu=8GiB,gpu0=70%` -> {"cpu": bytes, "gpu0": bytes}; a percentage is of `totals[device]`.
    Raises ConfigError naming the part that is wrong."""
    budget: dict[str, int] = {}
    for part in (piece.strip() for piece in text.split(",")):
        if not part:
            continue
        device, sep, amount = part.partition("=")
        device = device.strip().lower()
        if not sep or not _DEVICE.match(device):
            raise ConfigError(
                f"--model-memory-budget: '{part}' is not DEVICE=SIZE (DEVICE: cpu, gpu0, gpu1...; "
                "SIZE: bytes with a unit like 8GiB or 512MB, or a percentage like 70%)"
            )
        match = _SIZE.match(amount)
        unit = match.group(2).lower() if match else ""
        if match is None or (unit != "%" and unit not in _UNITS):
            raise ConfigError(f"--model-memory-budget: '{amount.strip()}' is not a size like 8GiB or 70%")
        number = float(match.group(1))
        if unit == "%":
            if device not in totals:
                raise ConfigError(f"--model-memory-budget: {device} is not a device of this machine")
            if not 0 < number <= 100:
                raise ConfigError(f"--model-memory-budget: {part} is not a percentage in (0, 100]")
            budget[device] = int(totals[device] * number / 100)
        else:
            budget[device] = int(number * _UNITS[unit])
        if budget[device] <= 0:
            raise ConfigError(f"--model-memory-budget: {part} leaves no memory")
    return budget


def device_totals(gpu_probe: GpuMemoryProbe | None = None) -> dict[str, int]:
    """Total memory of the host ("cpu") and of each GPU ("gpuN", CUDA's ordinal N)."""
    import psutil

    totals = {CPU: int(psutil.virtual_memory().total)}
    probe = gpu_probe if gpu_probe is not None else nvml_probe()
    for device in probe.devices():
        total = probe.total_bytes(device)
        if total is not None:
            totals[f"gpu{device}"] = total
    return totals


def add_memory_usage(message: Any, usage: MemoryUsage | None) -> None:
    """Fill a ModelStatistics message's `memory_usage` (Triton's: type CPU|GPU, id, byte_size)."""
    if usage is None:
        return
    for device, size in sorted(usage.by_device.items()):
        entry = message.memory_usage.add()
        entry.type = "CPU" if device == CPU else "GPU"
        entry.id = 0 if device == CPU else int(device.removeprefix("gpu"))
        entry.byte_size = size
