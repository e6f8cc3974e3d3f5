"""How one instance's backend is described, built and loaded, wherever it runs.

The main process writes an init record (`instance_record`); a worker process receives it over its
control socket (supervisor.py -> worker.py), an in-process instance (inprocess.py) uses it as is.
Both then call `load_backend`, so a model sees the same BackendContext and fails to load with the
same words in every instance mode.
"""

from __future__ import annotations

import base64
import functools
import json
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.backends.base import Backend, BackendContext
from server.errors import LoadError, ServerError

if TYPE_CHECKING:  # a worker process imports this module: keep tritonclient.grpc out of its start-up
    from server.vocabulary.instances import InstanceSpec
    from server.workers.settings import WorkerOptions


def instance_label(model_name: str, version: int, instance_name: str) -> str:
    """How load errors name an instance."""
    return f"model '{model_name}' version {version} instance '{instance_name}'"


@dataclass(frozen=True, slots=True)
class InstanceLaunch:
    """What starting one instance needs, whichever way it runs (worker process or in-process):
    built once by the core, passed whole through the supervisor and the channels."""

    model_name: str
    version: int
    model_dir: Path
    config: Any  # the model's ModelConfig
    spec: InstanceSpec
    backend: str = ""  # "": the one the config names (platform or backend)

    def __post_init__(self) -> None:
        if not self.backend:
            from server.repository import backend_name

            object.__setattr__(self, "backend", backend_name(self.config))

    @property
    def label(self) -> str:
        return instance_label(self.model_name, self.version, self.spec.name)


def instance_record(
    launch: InstanceLaunch, options: WorkerOptions, *, in_process: bool = False
) -> dict[str, Any]:
    """The JSON-safe description of one instance (the `init` record of shm_channel.py, less the
    arena settings a worker process adds)."""
    serialized = launch.config.SerializeToString(deterministic=True)
    return {
        "op": "init",
        "model_name": launch.model_name,
        "version": launch.version,
        "model_dir": str(launch.model_dir),
        "backend": launch.backend,
        "config": base64.b64encode(serialized).decode(),
        "config_json": _config_json(serialized),
        "instance": {"name": launch.spec.name, "kind": launch.spec.kind, "device_id": launch.spec.device_id},
        "backend_parameters": options.backend_parameters.get(launch.backend, {}),
        "log_verbose": options.log_verbose,
        "auto_complete": options.auto_complete_config,
        "in_process": in_process,
    }


@functools.lru_cache(maxsize=1024)
def _config_json(serialized: bytes) -> str:
    """Triton's JSON of a config, by its bytes: a model loaded again on demand (evicted, then asked
    for) has the same config, and converting it took a third of the server's work per load."""
    from server.repository import ModelConfig, config_to_json

    config = ModelConfig()
    config.ParseFromString(serialized)
    return json.dumps(config_to_json(config))


def import_what_loads_need() -> None:
    """Import what load_backend imports on first use. A worker process keeps them out of its
    start-up; a shared host, which loads many models, takes them when it starts, or the first
    model it loads is charged their ~7 MiB by the budget's resident-memory accounting."""
    import server.backends
    import server.backends.config_proto
    import server.repository
    import server.workers.sequence_state  # noqa: F401


def load_backend(init: dict[str, Any]) -> Backend:
    """Build the backend an init record names and load the model (blocking: user code runs here).

    Raises LoadError with the backend's own message, or `Class: message` for anything else the
    model's code raised.
    """
    try:
        backend = _create_backend(init)
        backend.load()
    except BaseException as exc:  # any failure of user code is a load error
        if init.get("log_verbose", 0):
            traceback.print_exc()
        detail = exc.message if isinstance(exc, ServerError) else f"{type(exc).__name__}: {exc}"
        raise LoadError(detail) from None
    return backend


def _create_backend(init: dict[str, Any]) -> Backend:
    from server.backends import create_backend
    from server.backends.config_proto import model_config_pb2

    config = model_config_pb2().ModelConfig()
    config.ParseFromString(base64.b64decode(init["config"]))
    instance = init["instance"]
    context = BackendContext(
        model_name=init["model_name"],
        version=int(init["version"]),
        model_dir=Path(init["model_dir"]),
        config=config,
        instance_name=instance["name"],
        instance_kind=instance["kind"],
        device_id=instance["device_id"],
        backend_parameters=init.get("backend_parameters", {}),
        log_verbose=int(init.get("log_verbose", 0)),
        config_json=init.get("config_json", ""),
        auto_complete=bool(init.get("auto_complete", True)),
        in_process=bool(init.get("in_process", False)),
    )
    backend = create_backend(init["backend"], context)
    if backend is None:
        raise LoadError(
            f"model '{context.model_name}' names backend '{init['backend']}', which tritonctl lacks"
        )
    from server.workers.sequence_state import wrap_sequence_backend

    return wrap_sequence_backend(backend, config)  # stateful models: implicit state, row parameters
