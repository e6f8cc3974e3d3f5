"""The model registry: which model versions exist, their state, and the live objects serving them.

Each model has version slots in Triton's states (LOADING, READY, UNLOADING, UNAVAILABLE + reason).
A READY slot holds a `LoadedVersion`: the instance workers, the version's scheduler, its
statistics and its request validator. Loading a model:

    config (folder config.pbtxt / server-level entry / override JSON) -> check_model_config
    -> resolve_versions -> place_instances -> start the instances of every version in parallel
    -> scheduler per version -> swap into the slot

A version that is READY while it is reloaded keeps serving until its replacement is ready; the
replacement then takes the slot in one step and the old one drains and closes in the
background. If the replacement fails, the old one keeps serving and the slot's reason says why.
A model that fails never stops the others. Control modes (none / explicit / poll) are driven
from outside (app.py and poller in this module) through `load`, `unload` and `poll_once`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.core.ensembles import (
    check_ensemble,
    composing_failure,
    composing_names,
    is_ensemble,
    reachable_configs,
)
from server.core.model_files import folder_fingerprint, write_override_files
from server.core.model_version import (
    LoadedVersion,
    instance_key,
    resolve_auto_kinds,
    start_ensemble_version,
    start_version,
    with_routing_of,
)
from server.core.override_paths import check_override_config
from server.core.placement import InstanceSpec, place_instances
from server.core.routing import WeightedVersionRouter
from server.core.scheduler.base import Scheduler
from server.errors import ConfigError, InvalidInput, LoadError, ModelNotFound, ModelNotReady, ServerError
from server.repository import (
    ModelConfig,
    check_model_config,
    config_from_json,
    load_model_config,
    resolve_versions,
    validate_model_name,
)
from server.repository.loader import version_folders
from server.repository.version_weights import config_version_weights
from server.workers.options import WorkerOptions

log = logging.getLogger("tritonctl.server")

READY, UNAVAILABLE, LOADING, UNLOADING = "READY", "UNAVAILABLE", "LOADING", "UNLOADING"
UNLOADED_REASON = "unloaded"


@dataclass
class VersionSlot:
    state: str
    reason: str = ""
    serving: LoadedVersion | None = None


@dataclass
class ModelRecord:
    """Everything the registry knows about one model name."""

    name: str
    versions: dict[int, VersionSlot] = field(default_factory=dict)
    config: ModelConfig | None = None  # config of the last successful load
    error: str = ""  # model-level failure (bad config, no version) when no slot says it
    attempted: bool = False  # a load was asked for: Triton's readiness then counts this model
    fingerprint: tuple[Any, ...] | None = None  # what poll mode saw on disk at the last load
    temp_dir: Path | None = None  # folder holding file overrides, removed with the model
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    router: WeightedVersionRouter | None = None  # from the `version_weights` parameter, if any


class ModelRegistry:
    """Models x versions for the whole server; the DataPlane reads it, app.py drives it."""

    def __init__(
        self,
        repositories: list[Path],
        *,
        worker_options: Any,
        visible_gpus: list[int],
        server_configs: dict[Path, Any] | None = None,
        autocomplete: bool = True,
        drain_timeout: float = 30.0,
    ) -> None:
        self.repositories = [path.resolve() for path in repositories]
        if isinstance(worker_options, WorkerOptions) and not autocomplete:
            # --disable-auto-complete-config: python models' auto_complete_config is not called either
            worker_options = dataclasses.replace(worker_options, auto_complete_config=False)
        self.worker_options = worker_options
        self.visible_gpus = visible_gpus
        self.server_configs: dict[Path, Any] = dict(server_configs or {})
        self.autocomplete = autocomplete
        self.drain_timeout = drain_timeout
        self.models: dict[str, ModelRecord] = {}
        self._background: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lookups (hot path)

    def get(self, name: str, version: str = "", *, route: bool = False) -> LoadedVersion:
        """The READY version a request for (name, version) goes to; "" = the highest READY one,
        or with `route` (inference) the next one the `version_weights` parameter picks."""
        record = self.models.get(name)
        if record is None or not record.versions:
            raise ModelNotFound(f"Request for unknown model: '{name}' is not found")
        if not version and route and record.router is not None:
            ready = [n for n, slot in record.versions.items() if slot.state == READY and slot.serving]
            picked = record.router.pick(ready)
            if picked is not None:
                serving = record.versions[picked].serving
                assert serving is not None
                return serving
        if not version:
            for number in sorted(record.versions, reverse=True):
                slot = record.versions[number]
                if slot.state == READY and slot.serving is not None:
                    return slot.serving
            raise ModelNotFound(f"Request for unknown model: '{name}' has no available versions")
        try:
            number = int(version)
        except ValueError:
            raise InvalidInput(
                f"failed to get model version from specified version string '{version}', "
                "version should be an integral value > 0"
            ) from None
        found = record.versions.get(number)
        if found is None:
            raise ModelNotFound(f"Request for unknown model: '{name}' version {number} is not found")
        if found.state != READY or found.serving is None:
            raise ModelNotReady(f"Request for unknown model: '{name}' version {number} is not at ready state")
        return found.serving

    def loaded_versions(self) -> Iterator[LoadedVersion]:
        for name in sorted(self.models):
            record = self.models[name]
            for number in sorted(record.versions):
                serving = record.versions[number].serving
                if serving is not None and record.versions[number].state == READY:
                    yield serving

    def all_ready(self) -> bool:
        """Triton's strict readiness: every model a load was asked for has all versions READY
        (a version unloaded on purpose does not count against it)."""
        for record in self.models.values():
            if not record.attempted:
                continue
            if not record.versions:
                return False
            for slot in record.versions.values():
                if slot.state != READY and not (slot.state == UNAVAILABLE and slot.reason == UNLOADED_REASON):
                    return False
                if slot.serving is not None and not slot.serving.has_live_instance:
                    return False  # every instance crashed: restarting (issue #7)
        return True

    def model_names_on_disk(self) -> list[str]:
        """Every model folder of every repository, and server-level entries (for the index)."""
        names: set[str] = set()
        for root in self.repositories:
            if root.is_dir():
                names.update(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        return sorted(names)

    def find_model_dir(self, name: str) -> Path | None:
        for root in self.repositories:
            candidate = root / name
            if candidate.is_dir():
                return candidate
        return None

    # ------------------------------------------------------------------ load / unload

    async def load(
        self, name: str, config_json: str | None = None, files: dict[str, bytes] | None = None
    ) -> None:
        """Load (or reload) every version the policy selects; raises LoadError on any failure."""
        try:
            validate_model_name(name)
        except ConfigError as exc:
            raise LoadError(exc.message) from None
        if not files and self.find_model_dir(name) is None:
            # Triton's words and status (INTERNAL) for a name with no folder.
            raise ServerError(f"failed to load '{name}', failed to poll from model repository")
        record = self.models.setdefault(name, ModelRecord(name))
        async with record.lock:
            record.attempted = True
            temp_dir: Path | None = None
            try:
                if files:
                    temp_dir = write_override_files(name, config_json, files)
                    model_dir = temp_dir / name
                else:
                    found = self.find_model_dir(name)
                    if found is None:  # removed while we waited for the lock
                        raise ServerError(f"failed to load '{name}', failed to poll from model repository")
                    model_dir = found
                fingerprint = (
                    None if config_json or files else await asyncio.to_thread(self.fingerprint, name)
                )
                config = await asyncio.to_thread(self._prepare_config, name, model_dir, config_json)
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
            except ServerError as exc:
                if temp_dir is not None:
                    shutil.rmtree(temp_dir, ignore_errors=True)
                self._record_failure(record, exc.message)
                if type(exc) is ServerError:
                    raise
                raise LoadError(exc.message) from None
            record.fingerprint = fingerprint
            await self._load_versions(record, model_dir, config, versions, specs)
            self._swap_temp_dir(record, temp_dir)
            failures = [
                f"version {number} is at {slot.state} state: {slot.reason};"
                for number, slot in sorted(record.versions.items())
                if number in versions and (slot.state != READY or slot.reason)
            ]
            if failures:
                raise LoadError(f"load failed for model '{name}': " + "\n".join(failures))

    async def unload(self, name: str, *, unload_dependents: bool = False) -> None:
        """Unload every version of the model; it stays in the index as UNAVAILABLE "unloaded".
        With `unload_dependents`, an ensemble's composing models go too (but not those that
        another loaded ensemble still runs)."""
        record = self.models.get(name)
        if record is None:
            return  # Triton answers success for a model that is not loaded (or does not exist)
        async with record.lock:
            await self._unload_versions(record, list(record.versions))
            if not record.versions:
                record.attempted = False
            record.error = ""
            record.fingerprint = None
            self._swap_temp_dir(record, None)
        if unload_dependents and record.config is not None and is_ensemble(record.config):
            still_used = {
                model
                for loaded in self.loaded_versions()
                if is_ensemble(loaded.config)
                for model in composing_names(loaded.config)
            }
            for model in composing_names(record.config):
                if model not in still_used:
                    await self.unload(model, unload_dependents=True)

    async def remove(self, name: str) -> None:
        """Unload the model and forget it (its folder is gone)."""
        await self.unload(name)
        self.models.pop(name, None)

    async def close(self, timeout: float | None = None) -> None:
        """Drain and stop every version (server shutdown)."""
        for record in self.models.values():
            for slot in record.versions.values():
                if slot.serving is not None:
                    slot.state = UNLOADING
        closing = [
            slot.serving.close(timeout)
            for record in self.models.values()
            for slot in record.versions.values()
            if slot.serving is not None
        ]
        await asyncio.gather(*closing, *self._background, return_exceptions=True)
        for record in self.models.values():
            for slot in record.versions.values():
                slot.serving, slot.state, slot.reason = None, UNAVAILABLE, UNLOADED_REASON
            self._swap_temp_dir(record, None)

    # ------------------------------------------------------------------ internals

    def _prepare_config(self, name: str, model_dir: Path, config_json: str | None) -> ModelConfig:
        """The checked config the model runs with; ConfigError/LoadError with the validator's words."""
        if config_json:
            from server.repository import autocomplete_config, fill_defaults
            from server.repository.loader import normalize_identity

            config = config_from_json(config_json)
            if config.name and config.name != name:
                raise LoadError(
                    f"unexpected directory name '{name}' for model '{config.name}', "
                    "directory name must equal model name"
                )
            normalize_identity(config, name, model_dir)
            check_override_config(config)  # no file path from the network leaves the model (issue #7)
            if self.autocomplete:
                config = fill_defaults(autocomplete_config(config, model_dir))
        else:
            server_config = self.server_configs.get(model_dir.parent.resolve())
            config = load_model_config(model_dir, server_config, autocomplete=self.autocomplete)
        errors = [d for d in check_model_config(config, model_dir) if d.severity == "error"]
        if errors:
            raise LoadError("\n".join(str(d) for d in errors))
        return config

    def _record_failure(self, record: ModelRecord, message: str) -> None:
        """A load failed before any version started: serving versions stay, the reason is shown."""
        serving = [slot for slot in record.versions.values() if slot.serving is not None]
        if serving:
            for slot in serving:
                slot.reason = f"reload failed, still serving the previous load: {message}"
        else:
            record.versions.clear()
            record.error = message
        log.error("failed to load '%s': %s", record.name, message)

    async def _load_versions(
        self,
        record: ModelRecord,
        model_dir: Path,
        config: ModelConfig,
        versions: list[int],
        specs: list[InstanceSpec],
    ) -> None:
        for number in versions:
            slot = record.versions.setdefault(number, VersionSlot(LOADING))
            if slot.serving is None:
                slot.state, slot.reason = LOADING, ""
            log.info("loading: %s:%d", record.name, number)
        keys = await asyncio.to_thread(lambda: {n: instance_key(config, model_dir, n) for n in versions})
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
                slot.serving, slot.state, slot.reason = result, READY, ""
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
            if slot.serving is not None:
                slot.reason = f"reload failed, still serving the previous load: {message}"
            else:
                slot.state, slot.reason = UNAVAILABLE, message
            log.error("failed to load '%s' version %d: %s", record.name, number, message)
        if record.config is config:
            # Set in the same step as the slots above (no await in between), so no request sees
            # the new versions with the old weights.
            weights = config_version_weights(config)
            record.router = WeightedVersionRouter(weights) if weights else None
        stale = [number for number in record.versions if number not in versions]
        if not all(record.versions[number].state == READY for number in versions):
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
        if current is not None and slot is not None and slot.state == READY and current.reuse_key == key:
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
        on_disk = await asyncio.to_thread(reachable_configs, config, self._config_on_disk)
        check_ensemble(name, on_disk, codes=("E403",))  # a loop would wait on itself below
        for model in composing_names(config):
            record = self.models.get(model)
            if record is not None and record.lock.locked():
                async with record.lock:
                    pass  # a load of it is under way: its outcome decides
            if not any(slot.state == READY for slot in (record or ModelRecord(model)).versions.values()):
                try:
                    await self.load(model)
                except ServerError as exc:
                    raise composing_failure(name, model, exc.message) from None
        served: dict[str, ModelConfig | None] = {name: config}
        for step in reversed(config.ensemble_scheduling.step):
            version = "" if step.model_version < 0 else str(step.model_version)
            try:
                served[step.model_name] = self.get(step.model_name, version).config
            except ServerError as exc:
                raise composing_failure(name, step.model_name, exc.message) from None
        check_ensemble(name, served)

    def _config_on_disk(self, name: str) -> ModelConfig | None:
        model_dir = self.find_model_dir(name)
        if model_dir is None:
            return None
        server_config = self.server_configs.get(model_dir.parent.resolve())
        try:
            return load_model_config(model_dir, server_config, autocomplete=False)
        except ServerError:
            return None

    def _composing_version(self, name: str, version: str) -> LoadedVersion:
        """The version an ensemble step goes to (version "" follows version_weights, if set)."""
        return self.get(name, version, route=True)

    def _on_instance_gave_up(self, name: str, version: int, scheduler: Scheduler, reason: str) -> None:
        """When no instance of a version is left (restarts gave up), the version is UNAVAILABLE."""
        record = self.models.get(name)
        slot = record.versions.get(version) if record is not None else None
        if slot is None or slot.serving is None or slot.serving.scheduler is not scheduler:
            return  # a version that was replaced or unloaded meanwhile
        if not any(channel.alive for channel in slot.serving.channels):
            slot.state, slot.reason = UNAVAILABLE, f"every instance failed: {reason}"
            log.error("'%s' version %d is UNAVAILABLE: %s", name, version, slot.reason)

    async def _unload_versions(self, record: ModelRecord, numbers: list[int]) -> None:
        closing: list[LoadedVersion] = []
        for number in numbers:
            slot = record.versions[number]
            if slot.serving is not None:
                slot.state = UNLOADING
                closing.append(slot.serving)
        await asyncio.gather(
            *(loaded.close(self.drain_timeout) for loaded in closing), return_exceptions=True
        )
        for number in numbers:
            slot = record.versions[number]
            slot.serving, slot.state, slot.reason = None, UNAVAILABLE, UNLOADED_REASON
            log.info("successfully unloaded '%s' version %d", record.name, number)

    def _retire(self, loaded: LoadedVersion) -> None:
        """Drain and close a replaced version without holding up the swap."""
        task = asyncio.get_running_loop().create_task(loaded.close(self.drain_timeout))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _swap_temp_dir(self, record: ModelRecord, new: Path | None) -> None:
        if record.temp_dir is not None and record.temp_dir != new:
            shutil.rmtree(record.temp_dir, ignore_errors=True)
        record.temp_dir = new

    # ------------------------------------------------------------------ poll mode

    def fingerprint(self, name: str) -> tuple[Any, ...] | None:
        """What poll mode compares: every file's path, size and mtime, plus a server-level entry."""
        model_dir = self.find_model_dir(name)
        if model_dir is None:
            return None
        items = folder_fingerprint(model_dir)
        server_config = self.server_configs.get(model_dir.parent.resolve())
        entry = b""
        if server_config is not None:
            for item in server_config.model_config_list:
                if item.config.name == name:
                    entry = item.config.SerializeToString()
        return (items, entry)

    async def poll_once(self) -> None:
        """Load new models, reload changed ones, unload removed ones (poll mode)."""
        on_disk = set(await asyncio.to_thread(self.model_names_on_disk))
        for name in sorted(set(self.models) - on_disk):
            log.info("model '%s' was removed from the repository: unloading", name)
            await self.remove(name)
        for name in sorted(on_disk):
            record = self.models.get(name)
            current = await asyncio.to_thread(self.fingerprint, name)
            if record is not None and record.attempted and record.fingerprint == current:
                continue
            if record is not None and record.attempted:
                log.info("model '%s' changed on disk: reloading", name)
            try:
                await self.load(name)
            except ServerError as exc:
                log.error("poll: %s", exc.message)
            finally:
                if name in self.models:
                    self.models[name].fingerprint = current
