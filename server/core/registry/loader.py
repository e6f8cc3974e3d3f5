"""The loader: brings model versions up and down, and is the one writer of the version table.

Loading a model:

    config (folder config.pbtxt / server-level entry / override JSON) -> check_model_config
    -> resolve_versions -> place_instances (an ensemble: its composing models load first)
    -> [LoadPolicy.before_load] -> start the instances of every version in parallel
    -> scheduler per version -> swap into the slot

A version that is READY while it is reloaded keeps serving until its replacement is ready; the
replacement then takes the slot in one step and the old one drains and closes in the
background. If the replacement fails, the old one keeps serving and the slot's reason says why.
A model that fails never stops the others. Loads of one model are serialised by its lock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from pathlib import Path
from typing import Any, Protocol

from server.core.model_version import (
    LoadedVersion,
    instance_key,
    resolve_auto_kinds,
    start_ensemble_version,
    start_version,
    with_routing_of,
)
from server.core.placement import place_instances
from server.core.registry.composing_models import (
    check_ensemble,
    composing_failure,
    composing_names,
    is_ensemble,
    reachable_configs,
)
from server.core.registry.model_folders import write_override_files
from server.core.registry.prepare import OverrideFolders, prepare_config
from server.core.registry.sources import RepositorySources
from server.core.registry.table import ModelRecord, ModelState, VersionTable
from server.core.routing import WeightedVersionRouter
from server.core.scheduler.base import Scheduler
from server.errors import ConfigError, LoadError, ServerError
from server.repository import ModelConfig, resolve_versions, validate_model_name
from server.repository.folder_walk import walk_folder
from server.repository.loader import version_folders
from server.repository.version_weights import config_version_weights
from server.vocabulary.collector import settle_after_load
from server.vocabulary.instances import InstanceSpec
from server.workers.settings import WorkerOptions

log = logging.getLogger(__name__)


class LoadPolicy(Protocol):
    """Where a server-wide load policy hooks in: the lifecycle manager (lifecycle.py) with its
    memory accounting, budget and eviction.

    `before_load` runs once the config is checked and the instances are placed, before any of
    them starts; it may unload other models (through the loader) to make room, or raise
    LoadError to refuse the load. `after_load` runs when the load ends, whatever its outcome
    (the policy measures what the model's versions hold); `after_unload` when an unload has
    ended. Memory comes back where versions stop: `_unload_versions` and `_retire` below.
    """

    async def before_load(self, name: str, config: ModelConfig, specs: list[InstanceSpec]) -> None: ...

    def after_load(self, name: str) -> None: ...

    def after_unload(self, name: str) -> None: ...


class ModelLoader:
    def __init__(
        self,
        table: VersionTable,
        sources: RepositorySources,
        *,
        worker_options: Any,
        visible_gpus: list[int],
        autocomplete: bool = True,
        drain_timeout: float = 30.0,
        policy: LoadPolicy | None = None,
    ) -> None:
        if isinstance(worker_options, WorkerOptions) and not autocomplete:
            # --disable-auto-complete-config: python models' auto_complete_config is not called either
            worker_options = dataclasses.replace(worker_options, auto_complete_config=False)
        self.table = table
        self.sources = sources
        self.worker_options = worker_options
        self.visible_gpus = visible_gpus
        self.autocomplete = autocomplete
        self.drain_timeout = drain_timeout
        self.policy = policy
        self.overrides = OverrideFolders()
        self._locks: dict[str, asyncio.Lock] = {}
        self._configs: dict[str, tuple[Any, ModelConfig]] = {}  # name -> (fingerprint, prepared config)
        self._background: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ load / unload

    async def load(
        self, name: str, config_json: str | None = None, files: dict[str, bytes] | None = None
    ) -> None:
        """Load (or reload) every version the policy selects; raises LoadError on any failure."""
        try:
            validate_model_name(name)
        except ConfigError as exc:
            raise LoadError(exc.message) from None
        if not files and self.sources.find_model_dir(name) is None:
            # Triton's words and status (INTERNAL) for a name with no folder.
            raise ServerError(f"failed to load '{name}', failed to poll from model repository")
        record = self.table.ensure(name)
        async with self._lock(name):
            try:
                await self._load_locked(record, name, config_json, files)
            finally:
                if self.policy is not None:
                    self.policy.after_load(name)
                settle_after_load()

    def busy(self, name: str) -> bool:
        """A load or unload of `name` is under way (or waiting for its turn)."""
        lock = self._locks.get(name)
        return lock is not None and lock.locked()

    async def _load_locked(
        self, record: ModelRecord, name: str, config_json: str | None, files: dict[str, bytes] | None
    ) -> None:
        record.attempted = True
        record.loadable = ""
        temp_dir: Path | None = None
        try:
            if files:
                temp_dir = write_override_files(name, config_json, files)
                model_dir = temp_dir / name
            else:
                found = self.sources.find_model_dir(name)
                if found is None:  # removed while we waited for the lock
                    raise ServerError(f"failed to load '{name}', failed to poll from model repository")
                model_dir = found
            fingerprint = (
                None if config_json or files else await asyncio.to_thread(self.sources.fingerprint, name)
            )
            config = await self._prepared_config(name, model_dir, config_json, fingerprint)
            versions = resolve_versions(config, version_folders(model_dir))
            if not versions:
                raise LoadError(
                    f"at least one version must be available under the version policy of model '{name}'"
                )
            specs: list[InstanceSpec] = []
            if is_ensemble(config):
                await self._prepare_ensemble(name, config)
            else:
                specs = place_instances(config, self.visible_gpus)
                resolve_auto_kinds(config, specs)
            if self.policy is not None:
                await self.policy.before_load(name, config, specs)
        except ServerError as exc:
            if temp_dir is not None:
                OverrideFolders.remove(temp_dir)
            record.failed_before_start(exc.message)
            deferred = exc.message.startswith("deferred: ")  # lifecycle.py: left for its first request
            (log.debug if deferred else log.error)("failed to load '%s': %s", name, exc.message)
            if type(exc) is ServerError:
                raise
            raise LoadError(exc.message) from None
        record.fingerprint = fingerprint
        await self._load_versions(record, model_dir, config, versions, specs)
        self.overrides.replace(name, temp_dir)
        failures = [
            f"version {number} is at {slot.state.value} state: {slot.reason};"
            for number, slot in sorted(record.versions.items())
            if number in versions and (slot.state is not ModelState.READY or slot.reason)
        ]
        if failures:
            raise LoadError(f"load failed for model '{name}': " + "\n".join(failures))

    async def unload(self, name: str, *, unload_dependents: bool = False) -> None:
        """Unload every version of the model; it stays in the index as UNAVAILABLE "unloaded".
        With `unload_dependents`, an ensemble's composing models go too (but not those that
        another loaded ensemble still runs)."""
        record = self.table.record(name)
        if record is None:
            return  # Triton answers success for a model that is not loaded (or does not exist)
        async with self._lock(name):
            try:
                await self._unload_versions(record, list(record.versions))
            finally:
                if self.policy is not None:
                    self.policy.after_unload(name)
            if not record.versions:
                record.attempted = False
            record.error = ""
            record.fingerprint = None
            self.overrides.replace(name, None)
        if unload_dependents and record.config is not None and is_ensemble(record.config):
            still_used = {
                model
                for loaded in self.table.loaded_versions()
                if is_ensemble(loaded.config)
                for model in composing_names(loaded.config)
            }
            for model in composing_names(record.config):
                if model not in still_used:
                    await self.unload(model, unload_dependents=True)

    async def remove(self, name: str) -> None:
        """Unload the model and forget it (its folder is gone)."""
        await self.unload(name)
        self.table.forget(name)
        self._locks.pop(name, None)

    async def close(self, timeout: float | None = None) -> None:
        """Drain and stop every version (server shutdown)."""
        slots = [slot for record in self.table.records() for slot in record.versions.values()]
        closing = [loaded.close(timeout) for slot in slots if (loaded := slot.start_unloading()) is not None]
        await asyncio.gather(*closing, *self._background, return_exceptions=True)
        for slot in slots:
            slot.unloaded()
        self.overrides.clear()

    # ------------------------------------------------------------------ internals

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def _prepared_config(
        self, name: str, model_dir: Path, config_json: str | None, fingerprint: Any
    ) -> ModelConfig:
        """The checked, completed config; a model reloaded with the same files on disk (an evicted
        model's next request) reuses the last one instead of parsing and checking it again."""
        cached = self._configs.get(name)
        if fingerprint is not None and cached is not None and cached[0] == fingerprint:
            config = ModelConfig()
            config.CopyFrom(cached[1])
            return config
        config = await asyncio.to_thread(self._prepare_config, name, model_dir, config_json)
        if fingerprint is not None:
            kept = ModelConfig()
            kept.CopyFrom(config)
            self._configs[name] = (fingerprint, kept)
        return config

    def _prepare_config(self, name: str, model_dir: Path, config_json: str | None) -> ModelConfig:
        return prepare_config(
            name,
            model_dir,
            config_json,
            server_config=None if config_json else self.sources.server_config_of(model_dir),
            autocomplete=self.autocomplete,
        )

    async def _load_versions(
        self,
        record: ModelRecord,
        model_dir: Path,
        config: ModelConfig,
        versions: list[int],
        specs: list[InstanceSpec],
    ) -> None:
        for number in versions:
            record.slot(number).start_loading()
            log.info("loading: %s:%d", record.name, number)

        def keys_of_versions() -> dict[int, tuple[Any, ...]]:
            entries = walk_folder(model_dir, enter_top_links=True)  # once for every version
            return {number: instance_key(config, model_dir, number, entries) for number in versions}

        keys = await asyncio.to_thread(keys_of_versions)
        results = await asyncio.gather(
            *(
                self._start_or_keep(record, number, model_dir, config, specs, key=keys[number])
                for number in versions
            ),
            return_exceptions=True,
        )
        record.error = ""
        for number, result in zip(versions, results, strict=True):
            slot = record.versions[number]
            if isinstance(result, LoadedVersion):
                previous = slot.serving
                if result is previous:  # a kept version shows the new policy and weights
                    result.config = with_routing_of(result.config, config)
                slot.serve(result)
                record.config = config
                if previous is not None and previous is not result:
                    self._retire(previous)
                log.info("successfully loaded '%s' version %d", record.name, number)
                continue
            message = (
                result.message if isinstance(result, ServerError) else f"{type(result).__name__}: {result}"
            )
            if isinstance(result, asyncio.CancelledError):
                raise result
            slot.fail(message)
            log.error("failed to load '%s' version %d: %s", record.name, number, message)
        if record.config is config:
            # Set in the same step as the slots above (no await in between), so no request sees
            # the new versions with the old weights.
            weights = config_version_weights(config)
            record.router = WeightedVersionRouter(weights) if weights else None
        stale = [number for number in record.versions if number not in versions]
        if not all(record.versions[number].state is ModelState.READY for number in versions):
            # Not every new version came up: versions that are still serving stay (removed only
            # once the whole new set is ready), so a broken edit, a half-copied version folder or
            # a failed rollout step never takes a model down.
            for number in stale:
                slot = record.versions[number]
                if slot.serving is not None:
                    slot.reason = "still serving: a version that should replace it failed to load"
            stale = [number for number in stale if record.versions[number].serving is None]
        await self._unload_versions(record, stale)

    async def _start_or_keep(
        self,
        record: ModelRecord,
        number: int,
        model_dir: Path,
        config: ModelConfig,
        specs: list[InstanceSpec],
        *,
        key: tuple[Any, ...],
    ) -> LoadedVersion:
        """The serving version itself when only routing (policy, weights) changed, else a fresh start."""
        slot = record.versions.get(number)
        current = slot.serving if slot is not None else None
        if current is not None and slot is not None and slot.is_ready and current.reuse_key == key:
            log.info("'%s' version %d is unchanged: keeping its instances", record.name, number)
            return current
        if is_ensemble(config):
            ensemble = await start_ensemble_version(
                record.name, number, model_dir=model_dir, config=config, lookup=self._composing_version
            )
            ensemble.reuse_key = key
            return ensemble
        loaded = await start_version(
            record.name,
            number,
            model_dir=model_dir,
            config=config,
            specs=specs,
            worker_options=self.worker_options,
            on_gave_up=functools.partial(self._on_instance_gave_up, record.name, number),
        )
        loaded.reuse_key = key
        return loaded

    async def _prepare_ensemble(self, name: str, config: ModelConfig) -> None:
        """Load the composing models that do not serve yet (Triton loads them with the ensemble),
        then check the steps against the configs they serve; raises LoadError."""
        on_disk = await asyncio.to_thread(reachable_configs, config, self.sources.config_on_disk)
        check_ensemble(name, on_disk, codes=("E403",))  # a loop would wait on itself below
        for model in composing_names(config):
            lock = self._locks.get(model)
            if lock is not None and lock.locked():
                async with lock:
                    pass  # a load of it is under way: its outcome decides
            record = self.table.record(model)
            if record is None or not record.has_ready_version():
                try:
                    await self.load(model)
                except ServerError as exc:
                    raise composing_failure(name, model, exc.message) from None
        served: dict[str, ModelConfig | None] = {name: config}
        for step in reversed(config.ensemble_scheduling.step):
            version = "" if step.model_version < 0 else str(step.model_version)
            try:
                served[step.model_name] = self.table.get(step.model_name, version).config
            except ServerError as exc:
                raise composing_failure(name, step.model_name, exc.message) from None
        check_ensemble(name, served)

    def _composing_version(self, name: str, version: str) -> LoadedVersion:
        """The version an ensemble step goes to (version "" follows version_weights, if set)."""
        return self.table.get(name, version, route=True)

    def _on_instance_gave_up(self, name: str, version: int, scheduler: Scheduler, reason: str) -> None:
        """When no instance of a version is left (restarts gave up), the version is UNAVAILABLE."""
        record = self.table.record(name)
        slot = record.versions.get(version) if record is not None else None
        if slot is None or slot.serving is None or slot.serving.scheduler is not scheduler:
            return  # a version that was replaced or unloaded meanwhile
        if not any(channel.alive for channel in slot.serving.channels):
            slot.fail(f"every instance failed: {reason}", keep_serving=False)
            log.error("'%s' version %d is UNAVAILABLE: %s", name, version, slot.reason)

    async def _unload_versions(self, record: ModelRecord, numbers: list[int]) -> None:
        closing = [loaded for n in numbers if (loaded := record.versions[n].start_unloading()) is not None]
        await asyncio.gather(
            *(loaded.close(self.drain_timeout) for loaded in closing), return_exceptions=True
        )
        for number in numbers:
            record.versions[number].unloaded()
            log.info("successfully unloaded '%s' version %d", record.name, number)

    def _retire(self, loaded: LoadedVersion) -> None:
        """Drain and close a replaced version without holding up the swap."""
        task = asyncio.get_running_loop().create_task(loaded.close(self.drain_timeout))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
