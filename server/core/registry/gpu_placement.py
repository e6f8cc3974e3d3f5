"""KIND_GPU instances on the device with room, and what a model needs per GPU.

Triton's rules (model_configuration.md, "Instance Groups"; server/core/placement.py) stay where
they are defined:
- a group with `gpus: [...]` gets `count` instances on *each* listed GPU, never moved; the budget
  of each of those devices is enforced (LRU eviction there, or a LoadError that names the device);
- a group without `gpus` and no GPU entry in `--model-memory-budget`: `count` instances on each
  visible GPU, as Triton does, except that GPUs without room for them (NVML free memory minus what
  loads under way were promised) are left out while at least one GPU has room. When none has room
  the group stays on every GPU, as Triton would place it, and the framework decides.

What we chose where Triton says nothing (it has no memory budget): a group without `gpus` while
`--model-memory-budget` names a GPU (`gpu0=...`) gets its `count` instances on ONE GPU, the one with
the most room. Replicating every model on every GPU defeats a budget meant to pack many models;
a model that should span GPUs lists them. Room on a device is the smaller of NVML's free memory
and the budget left there (`gpuN=` minus what loaded models hold and loads under way reserved),
each minus the loads placed but not yet reserved. A device whose room is short but whose idle
models could be evicted to make it (the lifecycle manager then evicts on THAT device) comes
next; with no such device, the one with the most room is chosen and the budget check reports why
the load cannot fit. A device nothing can be read of (no NVML reading, no budget) ranks last.

A model's need per GPU instance is its last measurement (GPU bytes over its GPU instances) or,
never loaded, the first guess of memory.estimate_load; its estimate is re-keyed to the devices
chosen (`with_gpu_need`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from server.core.placement import gpu_group_specs
from server.core.registry.memory import MemoryUsage
from server.repository import ModelConfig
from server.vocabulary.gpu_memory import NO_GPU, GpuMemoryProbe
from server.vocabulary.instances import KIND_GPU, InstanceSpec


def gpu_key(device: int) -> str:
    return f"gpu{device}"


@dataclass(frozen=True)
class DeviceRoom:
    device: int
    room: int | None  # bytes a load may still take there; None: nothing could be read
    reclaimable: int = 0  # bytes held there by models that could be evicted now


def choose_devices(rooms: list[DeviceRoom], need: int, *, pack: bool) -> list[int]:
    """The devices of a group without `gpus`; `need`: what its instances need on one device."""
    if not rooms:
        return []
    fits = [r for r in rooms if r.room is None or r.room >= need]
    if not pack:  # Triton's every GPU, less those without room (all of them when none has room)
        return [r.device for r in fits] if fits else [r.device for r in rooms]
    if fits:
        return [max(fits, key=lambda r: (r.room is not None, r.room or 0, -r.device)).device]
    known = [r for r in rooms if r.room is not None]
    reclaim = [r for r in known if (r.room or 0) + r.reclaimable >= need]
    if reclaim:
        return [max(reclaim, key=lambda r: ((r.room or 0) + r.reclaimable, -r.device)).device]
    return [max(known, key=lambda r: (r.room or 0, -r.device)).device]


def replace_unlisted_groups(
    config: ModelConfig, specs: list[InstanceSpec], choose: Callable[[int], list[int]]
) -> list[InstanceSpec]:
    """`specs` with every KIND_GPU group that lists no `gpus` re-placed on `choose(count)`'s devices
    (`count`: the group's instances per device); groups with `gpus` and other kinds are kept."""
    groups: dict[int, list[InstanceSpec]] = {}
    for spec in specs:
        groups.setdefault(spec.group_index, []).append(spec)
    placed: list[InstanceSpec] = []
    for group_index, members in groups.items():
        listed = (
            list(config.instance_group[group_index].gpus) if group_index < len(config.instance_group) else []
        )
        if listed or any(spec.kind != KIND_GPU for spec in members):
            placed.extend(members)
            continue
        count = len(members) // max(1, len({spec.device_id for spec in members}))
        devices = choose(count) or sorted({spec.device_id for spec in members if spec.device_id is not None})
        group_name = members[0].name.rsplit("_", 1)[0]
        placed.extend(gpu_group_specs(group_name, group_index, count, devices))
    return placed


def gpu_instances(specs: Iterable[InstanceSpec]) -> int:
    return sum(1 for spec in specs if spec.kind == KIND_GPU)


def gpu_bytes(usage: MemoryUsage) -> int:
    return sum(size for device, size in usage.by_device.items() if device.startswith("gpu"))


def with_gpu_need(usage: MemoryUsage, specs: list[InstanceSpec], per_instance: int) -> MemoryUsage:
    """`usage` with its GPU part replaced by `per_instance` on each KIND_GPU instance's device."""
    need = MemoryUsage({d: s for d, s in usage.by_device.items() if not d.startswith("gpu")})
    for spec in specs:
        if spec.kind == KIND_GPU and spec.device_id is not None:
            need.add(gpu_key(spec.device_id), per_instance)
    return need


@dataclass
class GpuPlacer:
    """The lifecycle manager's GPU side: chooses devices, remembers each model's need per GPU
    instance, and what loads placed but not yet reserved will take (`pending`)."""

    probe: GpuMemoryProbe = NO_GPU
    per_instance: dict[str, int] = field(default_factory=dict)  # name -> GPU bytes per instance
    pending: dict[str, MemoryUsage] = field(default_factory=dict)  # name -> GPU need, until it loaded

    def place(
        self,
        name: str,
        config: ModelConfig,
        specs: list[InstanceSpec],
        *,
        estimate: MemoryUsage,
        visible: list[int],
        budget: dict[str, int],
        used: MemoryUsage,
        reserved: Iterable[str],
        reclaimable: Callable[[str], int],
    ) -> list[InstanceSpec]:
        """The specs of this load (groups without `gpus` re-placed); records its pending need."""
        per_instance = self.per_instance.get(name)
        if per_instance is None:
            per_instance = gpu_bytes(estimate) // max(1, gpu_instances(specs))
        pack = any(device.startswith("gpu") for device in budget)
        unreserved = set(self.pending) - set(reserved) - {name}
        in_flight = self._sum(self.pending, exclude={name})
        not_yet_reserved = self._sum({n: self.pending[n] for n in unreserved})

        def rooms() -> list[DeviceRoom]:
            found = []
            for device in visible:
                key = gpu_key(device)
                terms = []
                free = self.probe.free_bytes(device)
                if free is not None:
                    terms.append(free - in_flight.by_device.get(key, 0))
                if key in budget:
                    held = used.by_device.get(key, 0) + not_yet_reserved.by_device.get(key, 0)
                    terms.append(budget[key] - held)
                found.append(DeviceRoom(device, min(terms) if terms else None, reclaimable(key)))
            return found

        placed = replace_unlisted_groups(
            config, specs, lambda count: choose_devices(rooms(), count * per_instance, pack=pack)
        )
        self.pending[name] = with_gpu_need(MemoryUsage(), placed, per_instance)
        return placed

    def loaded(self, name: str, gpu_used: int, instances: int) -> None:
        """A load of `name` ended: forget its pending need; learn its need per GPU instance."""
        self.pending.pop(name, None)
        if instances and gpu_used:
            self.per_instance[name] = gpu_used // instances

    @staticmethod
    def _sum(needs: dict[str, MemoryUsage], exclude: Iterable[str] = ()) -> MemoryUsage:
        total = MemoryUsage()
        skip = set(exclude)
        for name, need in needs.items():
            if name not in skip:
                total += need
        return total
