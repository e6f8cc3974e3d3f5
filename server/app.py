"""`serve(options)`: run the whole server until SIGTERM/SIGINT.

Start-up, in Triton's order: models first (per the control mode), then the front ends (HTTP,
gRPC, metrics), then "ready". Shutdown on the first SIGTERM/SIGINT: the server stops being live
and ready, the front ends stop accepting and let in-flight requests finish for up to
`--exit-timeout-secs`, then every model version drains and its workers stop (shared memory
released). A second signal skips the waiting.

Test hook: when the environment variable TRITONCTL_PORTS_FILE names a file, the bound ports are
written there as JSON once the server is up (so tests can bind port 0 and still find it).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from server.core.dataplane import DataPlane
from server.core.limits import PendingLimits
from server.core.registry import ModelRegistry, ModelState, RepositoryPoller
from server.core.registry.lifecycle import LifecycleManager
from server.core.registry.startup import TABLE_LIMIT, LoadProgress, load_models, startup_summary
from server.core.response_cache import ResponseCache
from server.errors import ConfigError, ServerError
from server.malloc_tuning import keep_large_buffers_in_heap
from server.open_files import check_room_for, open_file_limit, raise_open_file_limit
from server.options import ServerOptions, backend_config_map
from server.vocabulary.collector import settle_after_load
from server.vocabulary.cuda_regions import CudaRegionTable
from server.vocabulary.shm_regions import RegionTable

log = logging.getLogger(__name__)

PORTS_FILE_ENV = "TRITONCTL_PORTS_FILE"
T = TypeVar("T")


def serve(options: ServerOptions) -> int:
    """Run the server until it is signalled; returns the process exit code."""
    if not _configure_logging(options):
        return 2
    keep_large_buffers_in_heap()
    raise_open_file_limit()
    try:
        options.check()
    except ConfigError as exc:
        log.error("%s", exc.message)
        return 2
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        runner = asyncio.Runner()
    else:
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    with runner:
        return runner.run(Server(options).run())


def _configure_logging(options: ServerOptions) -> bool:
    """Triton's log settings (server/protocol/log_settings.py; changed at run time over /v2/logging);
    False when --log-file cannot be opened (said on stderr)."""
    from server.protocol.log_settings import LOG_CONTROL, LogSettings, skip_unused_record_fields

    skip_unused_record_fields()
    settings = LogSettings(
        log_file=options.log_file,
        log_info=options.log_info,
        log_warning=options.log_warning,
        log_error=options.log_error,
        log_verbose_level=max(options.log_verbose, 0),
        log_format=options.log_format if options.log_format in ("default", "ISO8601") else "default",
    )
    try:
        LOG_CONTROL.configure(settings, sys.stderr, whole_process=True)
    except OSError as exc:
        LOG_CONTROL.configure(LogSettings(log_verbose_level=settings.log_verbose_level), sys.stderr)
        log.error("--log-file %s cannot be opened: %s", options.log_file, exc.strerror or exc)
        return False
    return True


def load_server_configs(options: ServerOptions) -> dict[Path, Any]:
    """The server-level config of each repository: --server-config, else `<repo>/config.pbtxt`."""
    from server.repository import find_server_config, load_server_config

    explicit = load_server_config(options.server_config) if options.server_config else None
    configs: dict[Path, Any] = {}
    for root in options.model_repositories:
        path = None if explicit is not None else find_server_config(root)
        configs[root.resolve()] = (
            explicit if explicit is not None else (load_server_config(path) if path else None)
        )
    return configs


def build_worker_options(options: ServerOptions, server_configs: dict[Path, Any]) -> Any:
    """WorkerOptions from the server-level backend_config, overridden by --backend-config."""
    from server.workers.settings import WorkerOptions

    merged: dict[str, dict[str, str]] = {}
    for server_config in server_configs.values():
        if server_config is None:
            continue
        for entry in server_config.backend_config:
            merged.setdefault(entry.backend, {}).update(entry.parameters)
    for backend, values in backend_config_map(options.backend_config).items():
        merged.setdefault(backend, {}).update(values)
    defaults = merged.get("", {})  # Triton: a setting without a backend applies to every backend
    for backend in list(merged):
        if backend:
            merged[backend] = {**defaults, **merged[backend]}
    return WorkerOptions.from_backend_config(merged, options.log_verbose)


def visible_gpus(options: ServerOptions) -> list[int]:
    from server.vocabulary.gpus import discover_gpus, select_gpus

    available = [gpu.index for gpu in discover_gpus()]
    if not available and options.gpus.strip().lower() in ("all", ""):
        log.info("--gpus all: no GPU is visible, serving CPU instances (KIND_GPU models will not load)")
        return []
    return select_gpus(options.gpus, available)


class Server:
    """One server run: registry, DataPlane, front ends, poller, signals."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.registry: ModelRegistry | None = None
        self.dataplane: DataPlane | None = None
        self.front_ends: dict[str, Any] = {}
        self.regions: RegionTable | None = None
        self._stop = asyncio.Event()
        self._signals = 0
        self._poller: RepositoryPoller | None = None
        self.lifecycle: LifecycleManager | None = None
        self._phase: asyncio.Future[Any] | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        try:
            try:
                code = await self._run_phase(self._start())
            except asyncio.CancelledError:
                log.warning("second signal during start-up: stopping now")
                await self._close_models(0.0)
                return 1
            if code != 0:
                return code
            # What start-up built besides the models (front ends, tables) lives as long as the
            # server: out of the collector's sight like each load's objects (vocabulary/collector.py).
            settle_after_load()
            await self._stop.wait()
            try:
                await self._run_phase(self._shutdown())
            except asyncio.CancelledError:
                log.warning("second signal: stopping without waiting for in-flight requests")
                await self._close_models(0.0)
            return 0
        except (ServerError, OSError) as exc:
            log.error("error: %s", exc)
            await self._close_models(0.0)
            return 1
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

    async def _run_phase(self, phase: Coroutine[Any, Any, T]) -> T:
        """Run start-up or shutdown as a task a second signal can cancel."""
        task: asyncio.Task[T] = asyncio.ensure_future(phase)
        self._phase = task
        try:
            return await task
        finally:
            self._phase = None

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info(
                "%s received: shutting down (up to %gs for in-flight requests)",
                signal.Signals(signum).name,
                self.options.exit_timeout_secs,
            )
            self._stop.set()
        elif self._phase is not None and not self._phase.done():
            self._phase.cancel()

    # -- start-up --------------------------------------------------------------------------------
    async def _start(self) -> int:
        options = self.options
        for warning in options.warnings:
            log.warning("%s", warning)
        server_configs = await asyncio.to_thread(load_server_configs, options)
        self.registry = ModelRegistry(
            options.model_repositories,
            worker_options=build_worker_options(options, server_configs),
            visible_gpus=visible_gpus(options),
            server_configs=server_configs,
            autocomplete=not options.strict_model_config,
            drain_timeout=options.exit_timeout_secs,
        )
        self.dataplane = DataPlane(
            self.registry,
            control_mode=options.model_control_mode,
            strict_readiness=options.strict_readiness,
            server_name=options.server_id,
            limits=PendingLimits(options.max_pending_requests, options.max_pending_bytes),
            response_cache=(
                ResponseCache(options.response_cache_byte_size) if options.response_cache_byte_size else None
            ),
            sees_gpus=bool(self.registry.loader.visible_gpus),
        )
        for root in options.model_repositories:
            if not root.is_dir():
                raise ConfigError(f"failed to stat file {root}: the model repository does not exist")
        self._start_lifecycle()
        failed = await self._initial_load()
        if failed and options.exit_on_error:
            log.error("error: creating server: failed to load all models (%s)", ", ".join(failed))
            await self._close_models(0.0)
            return 1
        await self._start_front_ends()
        self.dataplane.mark_started()
        self._print_startup()
        if self.lifecycle is not None:
            self.lifecycle.start()  # evictions and idle unload from now on
        if options.model_control_mode == "poll":
            self._poller = self.registry.poller(
                options.repository_poll_secs, functools.partial(load_server_configs, options)
            )
            self._poller.start()
        return 0

    async def _initial_load(self) -> list[str]:
        """Load what the control mode says; returns the names that failed."""
        assert self.registry is not None
        options = self.options
        on_disk = self.registry.model_names_on_disk()
        if options.model_control_mode == "explicit":
            wanted = on_disk if "*" in options.load_models else list(dict.fromkeys(options.load_models))
        else:
            wanted = on_disk
        budgeted = self.lifecycle is not None and bool(self.lifecycle.budget)  # not all of them load
        short = None if budgeted else check_room_for(len(wanted), open_file_limit())
        if short is not None:
            log.warning("%s", short)
        return await load_models(
            self.registry,
            wanted,
            thread_count=options.model_load_thread_count,
            manager=self.lifecycle,
            progress=LoadProgress(len(wanted)),
        )

    def _start_lifecycle(self) -> None:
        """Memory accounting always; budget, pins, idle unload and on-demand loads as asked."""
        from server.core.registry.memory import device_totals, parse_budget
        from server.core.registry.on_demand import OnDemandLoader
        from server.vocabulary.gpu_memory import NO_GPU, nvml_probe

        assert self.registry is not None and self.dataplane is not None
        options = self.options
        # NVML only when a GPU is visible: a CPU-only start never imports pynvml for it.
        gpu_probe = nvml_probe() if self.registry.loader.visible_gpus else NO_GPU
        budget = (
            parse_budget(options.model_memory_budget, device_totals(gpu_probe))
            if options.model_memory_budget
            else {}
        )
        self.lifecycle = LifecycleManager(
            budget=budget,
            pinned=options.pin_models,
            idle_unload_s=options.model_idle_unload_secs,
            room_wait_s=options.model_load_wait_secs,
            gpu_probe=gpu_probe,
        )
        self.lifecycle.attach(self.registry.table, self.registry.loader)
        self.dataplane.lifecycle = self.lifecycle
        if options.on_demand:
            self.dataplane.on_demand = OnDemandLoader(
                self.registry, self.lifecycle, wait_s=options.model_load_wait_secs
            )

    async def _start_front_ends(self) -> None:
        options, dataplane = self.options, self.dataplane
        assert dataplane is not None
        # Client shared-memory regions: one table of each kind for both protocols, one name space
        # (--allow-client-shm). The CUDA one probes for a GPU on its first register only.
        regions = self.regions = RegionTable(allowed=options.allow_client_shm)
        CudaRegionTable(allowed=options.allow_client_shm, system=regions)  # reached as regions.cuda
        if options.allow_http:
            from server.protocol.http.server import start_http

            self.front_ends["HTTP"] = await start_http(dataplane, options, regions)
        if options.allow_grpc:
            from server.protocol.grpc.server import start_grpc

            self.front_ends["gRPC"] = await start_grpc(dataplane, options, regions)
        if options.allow_metrics:
            from server.metrics import start_metrics

            metrics = await start_metrics(dataplane, options)
            if metrics is not None:
                self.front_ends["metrics"] = metrics
        ports = {name.lower(): int(front.port) for name, front in self.front_ends.items()}
        ports_file = os.environ.get(PORTS_FILE_ENV)
        if ports_file:
            Path(ports_file).write_text(json.dumps(ports), encoding="utf-8")

    def _print_startup(self) -> None:
        from rich.console import Console
        from rich.table import Table

        assert self.registry is not None and self.dataplane is not None
        console = Console(stderr=True)
        index = self.dataplane.repository_index()
        if len(index) > TABLE_LIMIT:
            for line in startup_summary(index):
                console.print(line, highlight=False, soft_wrap=True)
            index = []
        table = Table(title="Models", title_justify="left")
        for column in ("Model", "Version", "Instances", "State", "Reason"):
            table.add_column(column, overflow="fold")  # long model names fold, never end in …
        for entry in index:
            instances = ""
            if entry.state == ModelState.READY.value:
                loaded = self.registry.table.get(entry.name, entry.version)
                kinds = [spec.kind.removeprefix("KIND_") for spec in loaded.instances]
                instances = ", ".join(f"{kinds.count(k)} x {k}" for k in dict.fromkeys(kinds))
            style = "green" if entry.state == ModelState.READY.value else ("red" if entry.state else "dim")
            table.add_row(
                entry.name,
                entry.version or "-",
                instances or "-",
                f"[{style}]{entry.state or 'not loaded'}[/{style}]",
                entry.reason.splitlines()[0] if entry.reason else "",
            )
        if index:
            console.print(table)
        where = ", ".join(
            f"{name} on {self._host_of(name)}:{front.port}" for name, front in self.front_ends.items()
        )
        local = all(self._host_of(name) in ("127.0.0.1", "localhost", "::1") for name in self.front_ends)
        hint = " (local only: pass --host 0.0.0.0 to accept remote clients)" if local else ""
        console.print(
            f"tritonctl server listening: {where or 'no front end enabled'}{hint}",
            highlight=False,
            soft_wrap=True,
        )

    def _host_of(self, front_end: str) -> str:
        options = self.options
        return {"HTTP": options.http_host, "gRPC": options.grpc_host}.get(front_end, options.metrics_host)

    # -- shutdown --------------------------------------------------------------------------------
    async def _shutdown(self) -> None:
        if self.dataplane is not None:
            self.dataplane.mark_exiting()
        if self._poller is not None:
            await self._poller.stop()
        if self.lifecycle is not None:
            await self.lifecycle.stop()
        grace = self.options.exit_timeout_secs
        # HTTP and gRPC drain their in-flight requests for up to `grace`; metrics just closes.
        await asyncio.gather(
            *(front.stop(grace) for name, front in self.front_ends.items() if name != "metrics"),
            return_exceptions=True,
        )
        await self._close_models(grace)
        if self.regions is not None:
            self.regions.close()  # every region's descriptor and handle (in-flight outputs hold their own)
        if "metrics" in self.front_ends:
            await self.front_ends["metrics"].stop()
        log.info("server stopped")

    async def _close_models(self, timeout: float) -> None:
        if self.registry is not None:
            await self.registry.close(timeout)
        from server.workers.host import close_hosts

        close_hosts()  # the shared host processes, once their instances are closed
