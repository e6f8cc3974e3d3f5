"""The model lifecycle manager: memory per model, a budget, LRU eviction and idle unload.

It is the loader's `LoadPolicy` (loader.py): `before_load` runs once a model's config is checked
and its instances placed, before any starts. There it estimates what the load needs
(memory.estimate_load, or the model's last measurement), refuses a model larger than the whole
budget, and unloads the least recently used idle models until the load fits. `after_load`
measures what the model's versions really hold (memory.measure_version) and keeps it for the
statistics' `memory_usage`, the metrics and the next estimate.

Never evicted: pinned models (`--model-pin`), models with requests queued or executing
(`scheduler.pending`), models being loaded or unloaded, composing models of a loaded ensemble.
KIND_GPU groups that list no `gpus` are placed on the device(s) with room first
(gpu_placement.py, through the one NVML seam `gpu_probe`); the budget is per device ("gpuN"), and
eviction frees memory on the device that is short.

"Recently used" is the version's `last_inference` (set by every execution; nothing is added to
the request path) or, for a model not used since, the end of its load.

An evicted model stays in the index ("unloaded (memory budget): loads on first request") and is
loaded again by the next request for it when on-demand loading is on (on_demand.py). Start-up
never evicts: models that do not fit are left for their first request (`deferred`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from server.core.registry.composing_models import composing_names, is_ensemble
from server.core.registry.gpu_placement import GpuPlacer, gpu_bytes, gpu_instances, with_gpu_need
from server.core.registry.memory import (
    MemoryUsage,
    estimate_load,
    format_bytes,
    measure_version,
)
from server.core.registry.recency import RecencyRanking
from server.errors import LoadError
from server.repository import ModelConfig, backend_name
from server.repository.instance_mode import HOST, INLINE, THREAD, effective_instance_mode
from server.vocabulary.gpu_memory import NO_GPU, GpuMemoryProbe
from server.vocabulary.instances import KIND_GPU, InstanceSpec

if TYPE_CHECKING:
    from server.core.registry.loader import ModelLoader
    from server.core.registry.table import VersionTable

log = logging.getLogger(__name__)

EVICTED_REASON = "unloaded (memory budget): loads on first request"
IDLE_REASON = "unloaded (idle): loads on first request"
DEFERRED_REASON = "not loaded (memory budget): loads on first request"
ROOM_POLL_S = 0.02  # a load waiting for room looks again this often (never the request path)
# (name, help, type, [(labels, value)]): what server/metrics.py exposes
MetricFamily = tuple[str, str, str, list[tuple[dict[str, str], float]]]


@dataclass
class LifecycleCounters:
    loads_on_demand: int = 0
    evictions_budget: int = 0
    evictions_idle: int = 0
    deferred_at_start: int = 0


class LifecycleManager:
    """Memory accounting and the budget; plugs into ModelLoader as its policy (`attach`)."""

    def __init__(
        self,
        *,
        budget: dict[str, int] | None = None,
        pinned: Iterable[str] = (),
        idle_unload_s: float = 0.0,
        room_wait_s: float = 60.0,
        measure: Callable[[Any], MemoryUsage] | None = None,
        gpu_probe: GpuMemoryProbe = NO_GPU,
    ) -> None:
        self.budget = dict(budget or {})
        self.pinned = set(pinned)
        self.idle_unload_s = idle_unload_s
        self.room_wait_s = room_wait_s  # how long a load waits for a model to become evictable
        self.gpu = GpuPlacer(gpu_probe)
        self._measure = measure or functools.partial(measure_version, gpu_probe=gpu_probe)
        self.counters = LifecycleCounters()
        self.measured: dict[str, MemoryUsage] = {}  # name -> its versions' memory at the last load
        self.starting = True  # app.py: no eviction during start-up, defer what does not fit
        self.deferred: set[str] = set()
        self._reserved: dict[str, MemoryUsage] = {}  # loads under way
        self._loading: set[str] = set()
        self._loaded_at: dict[str, float] = {}
        self._lock = asyncio.Lock()
        self._idle_task: asyncio.Task[None] | None = None
        self._trims: set[asyncio.Task[None]] = set()
        self._evicting: set[str] = set()  # chosen and being unloaded: their memory counts as free
        self._ranking = RecencyRanking(self.last_used)  # least recently used first, kept between loads
        # The models holding a loaded version, with the usage each adds to `_resident_total`. Kept
        # up to date by after_load / after_unload (a model only becomes resident through a load,
        # which always ends in after_load) instead of walking every record per decision: with
        # thousands of models and dozens of loads a second on demand, that walk took a quarter of
        # the event loop. A model that stops serving another way (every instance gave up) is
        # dropped when the eviction order meets it.
        self._resident: dict[str, MemoryUsage] = {}
        self._resident_total = MemoryUsage()
        self._resident_ensembles: set[str] = set()
        self.table: VersionTable | None = None
        self.loader: ModelLoader | None = None

    def attach(self, table: VersionTable, loader: ModelLoader) -> None:
        self.table, self.loader = table, loader
        loader.policy = self
        for record in table.records():
            self._note_residency(record.name)

    # -- LoadPolicy ------------------------------------------------------------------------------
    async def before_load(self, name: str, config: ModelConfig, specs: list[InstanceSpec]) -> None:
        self._loading.add(name)
        if any(spec.kind == KIND_GPU for spec in specs):
            specs[:] = self._place_on_gpus(name, config, specs)  # the loader starts what is placed here
        if not self.budget:
            return
        needed = self._estimate(name, config, specs)
        for device, size in needed.by_device.items():
            limit = self.budget.get(device)
            if limit is not None and size > limit:
                raise LoadError(
                    f"model '{name}' needs about {format_bytes(size)} of {device} memory, more than the "
                    f"whole --model-memory-budget for {device} ({format_bytes(limit)})"
                )
        deadline = time.monotonic() + self.room_wait_s
        while True:
            victims: list[str] = []
            async with self._lock:  # decide under the lock, unload outside it: loads never queue
                # One pass over the residents per decision (used, then the LRU order if short):
                # loads on demand come dozens a second and share the event loop with requests.
                used = self.used()
                order: dict[str, Iterator[str]] = {}
                while (short := self._shortfall_of(used, needed)) is not None:  # behind another's
                    device, missing = short  # eviction
                    if self.starting:
                        self.deferred.add(name)
                        self.counters.deferred_at_start += 1
                        raise LoadError(f"deferred: {DEFERRED_REASON}")
                    if device not in order:
                        order[device] = self._eviction_order(device, exclude=name)
                    victim = next(order[device], None)
                    if victim is None:
                        break
                    if self._dropped_stale(victim):
                        used = self.used()  # count again
                        continue
                    self._choose_victim(victim, victims, used)
                else:
                    self._reserved[name] = needed
            if victims:
                await asyncio.gather(*(self._evict_one(victim, name) for victim in victims))
            if name in self._reserved:
                return
            if victims:
                continue
            # Every model holding the budget is pinned, busy or loading: wait for one to be idle.
            if time.monotonic() >= deadline:
                raise LoadError(
                    f"no room for model '{name}' (needs about {format_bytes(needed.by_device[device])} "
                    f"of {device}, {format_bytes(missing)} more than is free) within {self.room_wait_s:g} s: "
                    "every model holding the --model-memory-budget is pinned, busy or loading"
                )
            await asyncio.sleep(ROOM_POLL_S)

    def after_load(self, name: str) -> None:
        """A load of `name` ended (loaded or not): its measured memory replaces the reservation."""
        self._loading.discard(name)
        self._reserved.pop(name, None)
        if self.table is None:
            return
        total = MemoryUsage()
        gpu_specs = 0
        for loaded in self.table.loaded_versions(name):
            usage = self._measure(loaded)
            loaded.memory = usage
            total += usage
            gpu_specs = gpu_specs or gpu_instances(getattr(loaded, "instances", ()))
        self.gpu.loaded(name, gpu_bytes(total), gpu_specs)
        if total.by_device:
            self.measured[name] = total
            self._loaded_at[name] = time.time()
        self._note_residency(name)
        if self.budget and not self.starting and self._shortfall(MemoryUsage()) is not None:
            # The load held more than its estimate: evict others until the budget holds again.
            task = asyncio.get_running_loop().create_task(self._trim(keep=name))
            self._trims.add(task)
            task.add_done_callback(self._trims.discard)

    async def _trim(self, keep: str) -> None:
        deadline = time.monotonic() + self.room_wait_s
        while time.monotonic() < deadline:
            async with self._lock:
                while (short := self._shortfall(MemoryUsage())) is not None:
                    victim = self._lru_victim(short[0], exclude=keep)
                    if victim is None:
                        break  # everything else is pinned, busy or loading: look again shortly
                    if self._dropped_stale(victim):
                        continue
                    await self.evict(victim, EVICTED_REASON, f"(over budget after '{keep}' loaded)")
                    self.counters.evictions_budget += 1
                else:
                    return
            await asyncio.sleep(ROOM_POLL_S)

    # -- accounting ------------------------------------------------------------------------------
    def _place_on_gpus(self, name: str, config: ModelConfig, specs: list[InstanceSpec]) -> list[InstanceSpec]:
        assert self.loader is not None
        return self.gpu.place(
            name,
            config,
            specs,
            estimate=self._estimate(name, config, specs),
            visible=self.loader.visible_gpus,
            budget=self.budget,
            used=self.used(),
            reserved=self._reserved,
            reclaimable=self.reclaimable,
        )

    def _estimate(self, name: str, config: ModelConfig, specs: list[InstanceSpec]) -> MemoryUsage:
        known = self.measured.get(name)
        if known is not None:
            per_instance = self.gpu.per_instance.get(name)
            return known if per_instance is None else with_gpu_need(known, specs, per_instance)
        assert self.loader is not None
        model_dir = self.loader.sources.find_model_dir(name)
        if model_dir is None:
            return MemoryUsage()
        from server.repository import resolve_versions
        from server.repository.loader import version_folders

        mode = effective_instance_mode(config, backend_name(config))
        return estimate_load(
            model_dir,
            resolve_versions(config, version_folders(model_dir)),
            specs,
            hosted=mode == HOST,
            in_process=mode in (INLINE, THREAD),
        )

    def after_unload(self, name: str) -> None:
        """An unload of `name` ended (the loader calls it): its memory is free again."""
        self._note_residency(name)

    def _note_residency(self, name: str) -> None:
        """Bring `_resident` and its total up to date for one model (loaded, measured, unloaded)."""
        previous = self._resident.pop(name, None)
        if previous is not None:
            for device, size in previous.by_device.items():
                self._resident_total.by_device[device] -= size
        self._resident_ensembles.discard(name)
        if not self._is_resident(name):
            return
        usage = self.measured.get(name, MemoryUsage())
        self._resident[name] = usage
        self._resident_total += usage
        record = self.table.record(name) if self.table is not None else None
        if record is not None and record.config is not None and is_ensemble(record.config):
            self._resident_ensembles.add(name)

    def used(self) -> MemoryUsage:
        """Memory held by loaded models (measured) and by loads under way (estimated)."""
        used = MemoryUsage(dict(self._resident_total.by_device))
        for name in self._evicting:
            for device, size in self._resident.get(name, MemoryUsage()).by_device.items():
                used.by_device[device] -= size
        for name, reserved in self._reserved.items():
            if name not in self.measured or name not in self._resident:
                used += reserved
        return used

    def _shortfall(self, needed: MemoryUsage) -> tuple[str, int] | None:
        return self._shortfall_of(self.used(), needed)

    def _shortfall_of(self, used: MemoryUsage, needed: MemoryUsage) -> tuple[str, int] | None:
        for device, limit in self.budget.items():
            over = used.by_device.get(device, 0) + needed.by_device.get(device, 0) - limit
            if over > 0:
                return device, over
        return None

    def _choose_victim(self, victim: str, victims: list[str], used: MemoryUsage) -> None:
        self._evicting.add(victim)  # counted as free from now on
        victims.append(victim)
        for device, size in self._resident.get(victim, MemoryUsage()).by_device.items():  # as used()
            used.by_device[device] = used.by_device.get(device, 0) - size

    def _resident_names(self) -> list[str]:
        """Models with a loaded version (serving, or still draining)."""
        return list(self._resident)

    def reclaimable(self, device: str) -> int:
        """Bytes of `device` held by models that could be evicted now."""
        in_use = self._composing_in_use()
        return sum(
            usage.by_device.get(device, 0)
            for name, usage in self._resident.items()
            if self.evictable(name, in_use)
        )

    def _dropped_stale(self, name: str) -> bool:
        """`name`, met in the eviction order, had stopped serving without an unload: no longer
        counted (then True), nothing to evict."""
        if self._is_resident(name):
            return False
        self._note_residency(name)
        return True

    def _is_resident(self, name: str) -> bool:
        record = self.table.record(name) if self.table is not None else None
        return record is not None and any(slot.serving is not None for slot in record.versions.values())

    # -- eviction --------------------------------------------------------------------------------
    def last_used(self, name: str) -> float:
        """Seconds since the epoch of the model's last execution, or of its load if later."""
        assert self.table is not None
        newest = self._loaded_at.get(name, 0.0)
        record = self.table.record(name)
        for slot in record.versions.values() if record is not None else ():
            if slot.serving is not None:
                newest = max(newest, slot.serving.stats.last_inference_ms / 1000.0)
        return newest

    def evictable(self, name: str, composing_in_use: set[str] | None = None) -> bool:
        assert self.table is not None and self.loader is not None
        if name in self.pinned or name in self._loading or name in self._evicting or self.loader.busy(name):
            return False
        record = self.table.record(name)
        if record is None or not record.has_ready_version():
            return False
        serving = [slot.serving for slot in record.versions.values() if slot.serving is not None]
        if any(loaded.scheduler.pending for loaded in serving):
            return False  # requests queued or executing
        in_use = self._composing_in_use() if composing_in_use is None else composing_in_use
        return name not in in_use

    def _composing_in_use(self) -> set[str]:
        assert self.table is not None
        table = self.table
        return {
            model
            for name in self._resident_ensembles
            for loaded in table.loaded_versions(name)
            if is_ensemble(loaded.config)
            for model in composing_names(loaded.config)
        }

    def _lru_victim(self, device: str, *, exclude: str) -> str | None:
        return next(self._eviction_order(device, exclude=exclude), None)

    def _eviction_order(self, device: str, *, exclude: str) -> Iterator[str]:
        """The evictable models holding `device` memory, least recently used first (recency.py),
        and the residents met on the way that stopped serving without an unload (stale). Whether
        one may go is asked as it comes up (a victim chosen meanwhile is `_evicting`)."""

        def holders() -> Iterator[str]:
            return (name for name, usage in self._resident.items() if usage.by_device.get(device, 0) > 0)

        in_use: set[str] | None = None
        for name in self._ranking.candidates(device, holders):
            if name == exclude or name not in self._resident:
                continue
            if not self._is_resident(name):  # stopped serving without an unload: the caller drops it
                yield name
                continue
            if in_use is None:
                in_use = self._composing_in_use()
            if self.evictable(name, in_use):
                yield name

    async def _evict_one(self, victim: str, for_name: str) -> None:
        try:
            await self.evict(victim, EVICTED_REASON, f"to make room for '{for_name}'")
            self.counters.evictions_budget += 1
        finally:
            self._evicting.discard(victim)

    async def evict(self, name: str, reason: str, why: str) -> None:
        assert self.table is not None and self.loader is not None
        idle_s = time.time() - self.last_used(name)
        freed = self.measured.get(name, MemoryUsage())
        log.info("evicting '%s' (idle %.1f s, %s) %s", name, idle_s, freed.describe() or "0 B", why)
        await self.loader.unload(name)
        record = self.table.record(name)
        if record is not None:
            record.mark_loadable(reason)

    # -- idle unload -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start-up is over: evict from now on; unload idle models if asked to."""
        self.starting = False
        if self.idle_unload_s > 0 and self._idle_task is None:
            self._idle_task = asyncio.ensure_future(self._unload_idle_forever())

    async def stop(self) -> None:
        task, self._idle_task = self._idle_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def unload_idle(self) -> list[str]:
        """Unload every evictable model idle for at least `idle_unload_s`; returns their names."""
        assert self.table is not None
        now = time.time()
        unloaded = []
        async with self._lock:
            in_use = self._composing_in_use()
            for name in self._resident_names():
                if self.evictable(name, in_use) and now - self.last_used(name) >= self.idle_unload_s:
                    await self.evict(name, IDLE_REASON, f"after {self.idle_unload_s:g} s without requests")
                    self.counters.evictions_idle += 1
                    unloaded.append(name)
        return unloaded

    async def _unload_idle_forever(self) -> None:
        interval = min(max(self.idle_unload_s / 4, 0.05), 5.0)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.unload_idle()
            except Exception:  # never let the loop die
                log.exception("idle unload failed")

    # -- what the statistics and metrics show ------------------------------------------------------
    def metric_families(self) -> list[MetricFamily]:
        """(name, help, type, [(labels, value)]) for server/metrics.py."""
        memory: list[tuple[dict[str, str], float]] = []
        if self.table is not None:
            for loaded in self.table.loaded_versions():
                usage: Any = getattr(loaded, "memory", None)
                for device, size in usage.by_device.items() if usage is not None else ():
                    labels = {"model": loaded.name, "version": str(loaded.version), "device": device}
                    memory.append((labels, float(size)))
        counters = self.counters
        families: list[MetricFamily] = [
            ("tritonctl_model_memory_bytes", "Memory held by a model version, per device", "gauge", memory),
            (
                "tritonctl_model_loads_on_demand_total",
                "Models loaded by a request for them",
                "counter",
                [({}, float(counters.loads_on_demand))],
            ),
            (
                "tritonctl_model_evictions_total",
                "Models unloaded by the lifecycle manager",
                "counter",
                [
                    ({"reason": "budget"}, float(counters.evictions_budget)),
                    ({"reason": "idle"}, float(counters.evictions_idle)),
                ],
            ),
        ]
        if self.budget:
            used = self.used()
            families.append(
                (
                    "tritonctl_model_memory_budget_bytes",
                    "The --model-memory-budget per device",
                    "gauge",
                    [({"device": device}, float(size)) for device, size in self.budget.items()],
                )
            )
            families.append(
                (
                    "tritonctl_model_memory_used_bytes",
                    "Memory the loaded models hold, per device of the budget",
                    "gauge",
                    [({"device": device}, float(used.by_device.get(device, 0))) for device in self.budget],
                )
            )
        return families
