"""The model registry: which model versions exist, in which state, and what loads them.

    table.py    VersionTable: records and version slots (`ModelState`), lookups, readiness, index
    loader.py   ModelLoader: config, placement, starting/keeping/stopping versions, overrides,
                ensembles' composing models; the table's one writer; `LoadPolicy` seam
    sources.py  RepositorySources: the repositories on disk, server-level configs, fingerprints
    poller.py   RepositoryPoller: poll mode's loop (app.py starts it)

`ModelRegistry` wires them for the server: the DataPlane reads `registry.table` and asks
`load`/`unload`; app.py drives the control modes (none / explicit / poll).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server.core.registry.loader import LoadPolicy, ModelLoader
from server.core.registry.poller import RepositoryPoller, ServerConfigReader
from server.core.registry.sources import RepositorySources
from server.core.registry.table import (
    UNLOADED_REASON,
    IndexEntry,
    ModelRecord,
    ModelState,
    VersionSlot,
    VersionTable,
)

__all__ = [
    "UNLOADED_REASON",
    "IndexEntry",
    "LoadPolicy",
    "ModelLoader",
    "ModelRecord",
    "ModelRegistry",
    "ModelState",
    "RepositoryPoller",
    "RepositorySources",
    "VersionSlot",
    "VersionTable",
]


class ModelRegistry:
    """The table, the loader and the repositories of one server."""

    def __init__(
        self,
        repositories: list[Path],
        *,
        worker_options: Any,
        visible_gpus: list[int],
        server_configs: dict[Path, Any] | None = None,
        autocomplete: bool = True,
        drain_timeout: float = 30.0,
        policy: LoadPolicy | None = None,
    ) -> None:
        self.sources = RepositorySources(repositories, server_configs)
        self.table = VersionTable()
        self.loader = ModelLoader(
            self.table,
            self.sources,
            worker_options=worker_options,
            visible_gpus=visible_gpus,
            autocomplete=autocomplete,
            drain_timeout=drain_timeout,
            policy=policy,
        )

    def model_names_on_disk(self) -> list[str]:
        return self.sources.model_names_on_disk()

    async def load(
        self, name: str, config_json: str | None = None, files: dict[str, bytes] | None = None
    ) -> None:
        await self.loader.load(name, config_json, files)

    async def unload(self, name: str, *, unload_dependents: bool = False) -> None:
        await self.loader.unload(name, unload_dependents=unload_dependents)

    async def close(self, timeout: float | None = None) -> None:
        await self.loader.close(timeout)

    def poller(
        self, interval_s: float, read_server_configs: ServerConfigReader | None = None
    ) -> RepositoryPoller:
        """Poll mode's poller over these repositories (not started)."""
        return RepositoryPoller(
            self.table,
            self.loader,
            self.sources,
            interval_s=interval_s,
            read_server_configs=read_server_configs,
        )
