"""One loaded model version: its instance processes, scheduler, statistics and request validator.

`start_version` brings a version up (supervised instances started in parallel, warm-up, the
scheduler its config asks for); `LoadedVersion.close` drains and stops it. The registry
(registry.py) decides which versions exist and swaps these objects in and out of its slots.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tritonclient.grpc import model_config_pb2

from server.core.request_validator import RequestValidator
from server.core.scheduler import create_scheduler
from server.core.scheduler.base import Scheduler
from server.core.scheduler.ensemble import ComposingLookup, EnsembleScheduler
from server.core.scheduler.warmup import run_warmup
from server.core.stats import ModelStats
from server.errors import LoadError, ServerError
from server.repository import ModelConfig, backend_name, check_model_config
from server.repository.folder_walk import FolderEntry, walk_folder
from server.repository.instance_mode import HOST, PROCESS, effective_instance_mode
from server.repository.version_weights import VERSION_WEIGHTS_KEY
from server.vocabulary.instances import InstanceSpec
from server.workers.channel import WorkerChannel

log = logging.getLogger(__name__)


@dataclass
class LoadedVersion:
    """One live model version: its instances, scheduler, statistics and validator."""

    name: str
    version: int
    config: ModelConfig
    model_dir: Path
    channels: list[WorkerChannel]
    scheduler: Scheduler
    stats: ModelStats
    validator: RequestValidator
    instances: list[InstanceSpec]
    # What the instances depend on (instance_key); a load that leaves it unchanged keeps them.
    reuse_key: tuple[Any, ...] | None = None
    # What its instances hold (registry/memory.py MemoryUsage), measured after the load.
    memory: Any = None

    @functools.cached_property
    def decoupled(self) -> bool:
        """The model sends 0..N responses per request (model_transaction_policy.decoupled, or an
        ensemble with a decoupled step)."""
        return bool(self.config.model_transaction_policy.decoupled) or bool(
            getattr(self.scheduler, "streams", False)
        )

    @functools.cached_property
    def reads_region_inputs(self) -> bool:
        """Inputs still in a client's shared-memory region may reach the instances unread: they
        are worker processes (each reads its inputs into its arena: workers/client_inputs.py) and
        nothing before them needs the bytes (no ensemble steps, no sequence batcher's rows, no
        shape tensors, whose contents the dynamic batcher compares). The DataPlane also reads
        them first for a model whose answers are cached (the key)."""
        backend = backend_name(self.config)
        return (
            bool(self.channels)
            and backend != "ensemble"
            and not self.config.HasField("sequence_batching")
            and not any(model_input.is_shape_tensor for model_input in self.config.input)
            and effective_instance_mode(self.config, backend) in (PROCESS, HOST)
        )

    @property
    def has_live_instance(self) -> bool:
        """False while every instance is down (crashed and restarting, or given up): the version
        is then not ready, like Triton's (issue #7). A version without instances (ensemble) is."""
        return not self.channels or any(channel.alive for channel in self.channels)

    async def close(self, drain_timeout: float | None = None) -> None:
        """Stop taking requests, let queued ones finish (up to drain_timeout), stop the workers."""
        try:
            await asyncio.wait_for(self.scheduler.stop(drain=True), drain_timeout)
        except TimeoutError:
            # Out of time: queued requests fail now; idle instances get a second to finalize,
            # busy ones are killed, which fails the requests they were executing.
            stopping = asyncio.ensure_future(self.scheduler.stop(drain=False))
            closing = [asyncio.ensure_future(channel.close()) for channel in self.channels]
            _, unfinished = await asyncio.wait(closing, timeout=1.0)
            if unfinished:
                for channel in self.channels:
                    channel.kill()
                await asyncio.wait(unfinished, timeout=5.0)
            await asyncio.wait([stopping], timeout=5.0)
        finally:
            await asyncio.gather(*(channel.close() for channel in self.channels), return_exceptions=True)


async def start_version(
    name: str,
    version: int,
    *,
    model_dir: Path,
    config: ModelConfig,
    specs: list[InstanceSpec],
    worker_options: Any,
    on_gave_up: Callable[[Scheduler, str], None],
) -> LoadedVersion:
    """Start every instance of one version in parallel, warm them up, give them a scheduler.

    Raises LoadError (every started instance stopped again) when any instance fails to load.
    `on_gave_up(scheduler, reason)` is called when an instance's supervisor stops restarting it.
    """
    from server.workers.backend_loading import InstanceLaunch
    from server.workers.inprocess import InProcessChannel
    from server.workers.supervisor import InstanceSupervisor

    started = time.monotonic()
    scheduler_box: list[Scheduler] = []  # filled once the instances are up
    by_name: dict[str, WorkerChannel] = {}

    def on_instance_state(instance: str, state: str, reason: str) -> None:
        channel = by_name.get(instance)
        if not scheduler_box or channel is None:
            return
        rotate_instance(scheduler_box[0], channel, state == "READY")
        if state not in ("READY", "STOPPED"):
            log.warning("'%s' version %d instance %s is %s: %s", name, version, instance, state, reason)
        if state == "FAILED":
            on_gave_up(scheduler_box[0], reason)

    mode = effective_instance_mode(config, backend_name(config))

    def launch(spec: InstanceSpec) -> Awaitable[WorkerChannel]:
        instance = InstanceLaunch(name, version, model_dir, config, spec)
        if mode in (PROCESS, HOST):
            return InstanceSupervisor.launch(instance, worker_options, on_instance_state, hosted=mode == HOST)
        # inline / thread: in the server's own process, nothing to supervise (issue #8)
        return InProcessChannel.start(instance, worker_options, mode)

    results = await asyncio.gather(*(launch(spec) for spec in specs), return_exceptions=True)
    channels: list[WorkerChannel] = [result for result in results if isinstance(result, WorkerChannel)]
    failures = [result for result in results if isinstance(result, BaseException)]
    if failures:
        await asyncio.gather(*(channel.close() for channel in channels), return_exceptions=True)
        first = failures[0]
        if isinstance(first, ServerError):
            raise LoadError(first.message)
        raise LoadError(f"{type(first).__name__}: {first}") from first
    try:
        config = served_config(name, config, channels, model_dir)
        # model_warmup runs on every instance before the version can become READY
        await run_warmup(config, channels, model_dir)
    except BaseException:
        await asyncio.gather(*(channel.close() for channel in channels), return_exceptions=True)
        raise
    stats = ModelStats()
    stats.record_load(time.monotonic() - started)
    scheduler = create_scheduler(config, version, channels, stats)
    scheduler_box.append(scheduler)
    by_name.update((channel.instance_name, channel) for channel in channels)
    await scheduler.start()
    return LoadedVersion(
        name,
        version,
        config,
        model_dir,
        channels,
        scheduler,
        stats,
        RequestValidator(name, config),
        specs,
    )


async def start_ensemble_version(
    name: str, version: int, *, model_dir: Path, config: ModelConfig, lookup: ComposingLookup
) -> LoadedVersion:
    """An ensemble version: no instances, a scheduler that runs its steps over the composing
    models that `lookup` finds (the registry's READY versions, looked up per request)."""
    stats = ModelStats()
    scheduler = EnsembleScheduler(config, version, stats, lookup)
    await scheduler.start()
    stats.record_load(0.0)
    return LoadedVersion(
        name, version, config, model_dir, [], scheduler, stats, RequestValidator(name, config), []
    )


def served_config(
    name: str, config: ModelConfig, channels: list[WorkerChannel], model_dir: Path
) -> ModelConfig:
    """The config the version serves: as the model completed it while loading (a python model's
    `auto_complete_config`), checked by the same rules as any config, else as given. Triton
    serves the completed config (GET .../config, metadata, request checks, batching)."""
    completed = next((c.completed_config for c in channels if c.completed_config is not None), None)
    if completed is None:
        return config
    completed.name = name
    errors = [d for d in check_model_config(completed, model_dir) if d.severity == "error"]
    if errors:
        details = "\n".join(str(d) for d in errors)
        raise LoadError(f"the config completed by auto_complete_config is invalid: {details}")
    return completed


def with_routing_of(served: ModelConfig, config: ModelConfig) -> ModelConfig:
    """`served` with the routing fields (version_policy, version_weights) of a newer `config`:
    what a kept version shows after a load that changed only those (see instance_key)."""
    updated = ModelConfig()
    updated.CopyFrom(served)
    updated.version_policy.CopyFrom(config.version_policy)
    if VERSION_WEIGHTS_KEY in config.parameters:
        updated.parameters[VERSION_WEIGHTS_KEY].CopyFrom(config.parameters[VERSION_WEIGHTS_KEY])
    elif VERSION_WEIGHTS_KEY in updated.parameters:
        del updated.parameters[VERSION_WEIGHTS_KEY]
    return updated


def instance_key(
    config: ModelConfig, model_dir: Path, version: int, entries: list[FolderEntry] | None = None
) -> tuple[Any, ...]:
    """What a version's running instances depend on: the model folder, the config except the
    routing fields (version_policy, the version_weights parameter) and the files of the folder
    except config.pbtxt and the other versions' folders. Equal keys -> a load keeps the instances.
    `entries`: the folder as `walk_folder(model_dir, enter_top_links=True)` read it (once for
    every version of a load)."""
    routing_free = ModelConfig()
    routing_free.CopyFrom(config)
    routing_free.ClearField("version_policy")
    if VERSION_WEIGHTS_KEY in routing_free.parameters:
        del routing_free.parameters[VERSION_WEIGHTS_KEY]
    if entries is None:
        entries = walk_folder(model_dir, enter_top_links=True)
    mine = str(version)
    files = tuple(
        (entry.relative, entry.size, entry.mtime_ns)
        for entry in entries
        if not entry.is_dir  # a folder's mtime moves with __pycache__
        and entry.parts[0] != "config.pbtxt"
        and not (entry.parts[0].isdigit() and entry.parts[0] != mine)
    )
    return (str(model_dir.resolve()), routing_free.SerializeToString(deterministic=True), files)


def rotate_instance(scheduler: Scheduler, channel: WorkerChannel, serving: bool) -> None:
    """Put a (re)started instance back into its scheduler's rotation, or take a failed one out."""
    pool = scheduler.pool
    if pool is None:
        return
    if serving:
        pool.add(channel)  # no-op for an instance already in the rotation
    else:
        pool.remove(channel)


def resolve_auto_kinds(config: ModelConfig, specs: list[InstanceSpec]) -> None:
    """Write the kind each KIND_AUTO group was placed as back into the config, as Triton reports it."""
    for index, group in enumerate(config.instance_group):
        placed = {spec.kind for spec in specs if spec.group_index == index}
        if group.kind == model_config_pb2.ModelInstanceGroup.KIND_AUTO and len(placed) == 1:
            group.kind = model_config_pb2.ModelInstanceGroup.Kind.Value(placed.pop())
