"""The DataPlane: the one object both front ends (HTTP and gRPC) call.

It answers health, metadata, config, statistics and repository questions from the registry's
version table, and runs inference as: find the READY version -> validate the request against its
config -> the version's scheduler. Loads and unloads go to the registry. Nothing here knows
about HTTP or gRPC.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tritonclient.grpc import model_config_pb2

from server import __version__
from server.core.labels import OutputLabels
from server.core.limits import PendingLimits
from server.core.model_version import LoadedVersion
from server.core.registry import ModelRegistry, ModelState
from server.core.registry.memory import add_memory_usage
from server.core.registry.on_demand import OnDemandLoader
from server.core.response_cache import CachedModels, ResponseCache
from server.core.scheduler.ensemble import install_step_runner
from server.core.stats import StatsEntry, statistics_response
from server.core.upcalls import DataPlaneUpcalls, start_stream
from server.errors import (
    DecoupledUnsupported,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    ServerError,
    Unavailable,
)
from server.vocabulary.dtypes import config_to_wire
from server.vocabulary.eager import on_done
from server.vocabulary.shm_regions import materialize
from server.vocabulary.stream import ResponseStream
from server.vocabulary.types import InferenceRequest, InferenceResult
from server.workers.upcalls import install_upcall_handler

if TYPE_CHECKING:
    from tritonclient.grpc import service_pb2

# The protocol extensions this server implements (Triton's names, as in GET /v2).
EXTENSIONS = (
    "classification",
    "model_repository",
    "model_repository(unload_dependents)",
    "schedule_policy",
    "model_configuration",
    "binary_tensor_data",
    "parameters",
    "statistics",
    "logging",  # GET/POST /v2/logging, gRPC LogSettings (protocol/log_settings.py)
    "sequence",  # sequence_id / sequence_start / sequence_end (scheduler/sequence.py)
    "system_shared_memory",
)


@dataclass(frozen=True, slots=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: list[int]


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


@dataclass(frozen=True, slots=True)
class RepositoryEntry:
    name: str
    version: str  # "" when the model has no version entry (never loaded, or failed before)
    state: str  # "READY" | "UNAVAILABLE" | "LOADING" | "UNLOADING" | "" (never loaded)
    reason: str


def _tensor_metadata(tensors: Any, batched: bool) -> list[TensorMetadata]:
    result = []
    for tensor in tensors:
        dims = [int(dim) for dim in tensor.dims]
        result.append(
            TensorMetadata(
                name=tensor.name,
                datatype=config_to_wire(model_config_pb2.DataType.Name(tensor.data_type)),
                shape=[-1, *dims] if batched else dims,
            )
        )
    return result


class DataPlane:
    """Protocol-free server API over a ModelRegistry."""

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        control_mode: str = "none",
        strict_readiness: bool = True,
        server_name: str = "triton",
        limits: PendingLimits | None = None,
        response_cache: ResponseCache | None = None,
        sees_gpus: bool = False,
    ) -> None:
        self.registry = registry
        # Triton lists cuda_shared_memory where it was built with GPU support; this server where it
        # sees a GPU (registering still needs cuda-python, and says so: vocabulary/cuda_regions.py).
        self.extensions = (*EXTENSIONS, "cuda_shared_memory") if sees_gpus else EXTENSIONS
        self.table = registry.table  # every lookup goes through its public API
        self.limits = limits  # server-wide cap on pending requests and bytes (limits.py)
        self._labels = OutputLabels()  # classification labels per loaded version (labels.py)
        # --cache-config: answers of models with response_cache { enable: true } (response_cache.py)
        self.cached_models = (
            CachedModels(response_cache, self.table.get) if response_cache is not None else None
        )
        # ensemble steps consult their composing models' caches too (scheduler/ensemble.py)
        install_step_runner(self.cached_models.run_step if self.cached_models is not None else None)
        self.control_mode = control_mode
        self.strict_readiness = strict_readiness
        self.server_name = server_name
        self._started = False
        self._exiting = False
        self.on_demand: OnDemandLoader | None = None  # app.py sets it (--model-load-on-demand)
        self.lifecycle: Any = None  # registry/lifecycle.py LifecycleManager (memory, evictions)
        install_upcall_handler(DataPlaneUpcalls(self))  # models' BLS calls come in here (upcalls.py)

    # -- lifecycle (app.py) ----------------------------------------------------------------------
    def mark_started(self) -> None:
        self._started = True

    def mark_exiting(self) -> None:
        """From now on the server is neither live nor ready and refuses new inferences."""
        self._exiting = True

    # -- health and metadata ---------------------------------------------------------------------
    def live(self) -> bool:
        return not self._exiting

    def ready(self) -> bool:
        if not self._started or self._exiting:
            return False
        return not self.strict_readiness or self.table.all_ready()

    def server_metadata(self) -> dict[str, Any]:
        return {"name": self.server_name, "version": __version__, "extensions": list(self.extensions)}

    def model_ready(self, name: str, version: str = "") -> bool:
        if self._exiting:
            return False
        try:
            loaded = self.table.get(name, version)
        except Exception:  # any lookup failure means "not ready", never an error here
            return False
        return loaded.has_live_instance and all(channel.model_ready for channel in loaded.channels)

    def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        loaded = self.table.get(name, version)
        config = loaded.config
        batched = config.max_batch_size > 0
        return ModelMetadata(
            name=name,
            versions=[str(v.version) for v in self.table.loaded_versions(name)],
            platform=config.platform or config.backend,
            inputs=_tensor_metadata(config.input, batched),
            outputs=_tensor_metadata(config.output, batched),
        )

    def model_config(self, name: str, version: str = "") -> model_config_pb2.ModelConfig:
        return self.table.get(name, version).config

    def output_labels(self, name: str, version: str = "") -> dict[str, list[str]]:
        """Each output's classification labels (its `label_filename`), read once per loaded version."""
        return self._labels.of(self.table.get(name, version))

    # -- inference -------------------------------------------------------------------------------
    async def infer(self, request: InferenceRequest) -> InferenceResult:
        return await self.submit(request)

    def submit(self, request: InferenceRequest) -> asyncio.Future[InferenceResult]:
        """Admit, validate and queue a request; the future settles with its result or ServerError.

        Errors found before queueing (unknown model, invalid input, overload) raise at once.
        Cancelling the future withdraws the request (see Scheduler.submit)."""
        if self._exiting:
            raise Unavailable("Server exiting")
        try:
            loaded = self.table.get(request.model, request.version, route=True)  # version_weights
        except (ModelNotFound, ModelNotReady):
            on_demand = self.on_demand  # a model on disk but not loaded: load it, then serve
            if on_demand is None or self._exiting or not on_demand.covers(request.model):
                raise
            return on_demand.submit(request, self.submit)
        if not loaded.has_live_instance:  # every instance crashed: 503, retry once one is back
            raise ModelNotReady(
                f"'{loaded.name}' version {loaded.version} is not ready: no instance is running "
                "(restarting after a crash)"
            )
        loaded.validator.validate(request)
        for tensor in request.inputs:
            if tensor.source is not None:  # in a client's region, not read yet
                self._place_region_inputs(loaded, request)
                break
        if loaded.decoupled and request.stream is None:
            raise DecoupledUnsupported()  # Triton's words; gRPC ModelStreamInfer and generate_stream serve it
        request.version = str(loaded.version)
        cached = self.cached_models
        if cached is not None and cached.uses(loaded):
            return cached.submit(loaded, request, self._schedule)
        return self._schedule(loaded, request)

    def _place_region_inputs(self, loaded: LoadedVersion, request: InferenceRequest) -> None:
        """Read a request's inputs from the client's regions here unless the model's worker
        processes read them themselves (and no cache key needs them): shm_regions.materialize."""
        cached = self.cached_models
        if not loaded.reads_region_inputs or (cached is not None and cached.uses(loaded)):
            materialize(request)

    def _schedule(self, loaded: LoadedVersion, request: InferenceRequest) -> asyncio.Future[InferenceResult]:
        """Admission (--max-pending-*) and the model's scheduler."""
        limits = self.limits
        if limits is None:
            return loaded.scheduler.submit(request)
        size = limits.admit(request)  # ServerOverloaded (503) beyond --max-pending-*
        try:
            future = loaded.scheduler.submit(request)
        except BaseException:
            limits.release(size)
            raise
        on_done(future, lambda _: limits.release(size))
        return future

    def is_decoupled(self, name: str, version: str = "") -> bool:
        """Whether the model answers 0..N responses per request (decoupled, or an ensemble with a
        decoupled step); False for a model that is not there (the request path says why)."""
        try:
            return self.table.get(name, version).decoupled
        except ServerError:
            return False

    def submit_stream(self, request: InferenceRequest, stream: ResponseStream) -> None:
        """Queue a request whose answers (0..N of a decoupled model, else one) go into `stream`,
        ending with a final item; errors before queueing raise at once (core/upcalls.py)."""
        start_stream(self, request, stream)

    # -- statistics ------------------------------------------------------------------------------
    def model_statistics(self, name: str = "", version: str = "") -> service_pb2.ModelStatisticsResponse:
        """Triton's statistics extension: every READY version, or those of one model / version."""
        selected: list[LoadedVersion]
        if not name:
            selected = list(self.table.loaded_versions())
        elif version:
            try:
                selected = [self.table.get(name, version)]
            except Exception:
                raise InvalidInput(f"requested model '{name}' version {version} is not available") from None
        else:
            selected = list(self.table.loaded_versions(name))
            if not selected:
                raise InvalidInput(f"requested model '{name}' is not available")
        response = statistics_response((v.name, str(v.version), v.stats) for v in selected)
        for message, serving in zip(response.model_stats, selected, strict=True):
            add_memory_usage(message, serving.memory)  # Triton's memory_usage (registry/memory.py)
        return response

    def stats_entries(self) -> list[StatsEntry]:
        """Every READY version's statistics and queue depth (for the metrics endpoint)."""
        if self.cached_models is not None:  # marks the versions that use the cache (their metrics)
            for loaded in self.table.loaded_versions():
                self.cached_models.uses(loaded)
        return [
            StatsEntry(v.name, str(v.version), v.stats, v.scheduler.pending)
            for v in self.table.loaded_versions()
        ]

    # -- model repository extension --------------------------------------------------------------
    def repository_index(self, ready_only: bool = False) -> list[RepositoryEntry]:
        """Every model of the repositories (loaded or not) and every model loaded from an override."""
        return [
            RepositoryEntry(entry.name, entry.version, entry.state.value if entry.state else "", entry.reason)
            for entry in self.table.index(self.registry.model_names_on_disk())
            if not ready_only or entry.state is ModelState.READY
        ]

    async def load_model(
        self, name: str, config_json: str | None = None, files: dict[str, bytes] | None = None
    ) -> None:
        self._check_model_control()
        await self.registry.load(name, config_json, files)

    async def unload_model(self, name: str, unload_dependents: bool = False) -> None:
        """Unload a model; with unload_dependents, an ensemble's composing models as well."""
        self._check_model_control()
        await self.registry.unload(name, unload_dependents=unload_dependents)

    def _check_model_control(self) -> None:
        if self._exiting:
            raise Unavailable("Server exiting")
        if self.control_mode != "explicit":
            # Triton's words (it says "polling" for mode none as well).
            raise Unavailable("explicit model load / unload is not allowed if polling is enabled")
