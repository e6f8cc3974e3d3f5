"""Poll mode (`--model-control-mode=poll`): the repositories on disk decide what is loaded.

Every `--repository-poll-secs` the poller re-reads the server-level config, then loads new
models, reloads those whose fingerprint (files, sizes, mtimes, server-level entry) changed since
their last load, and unloads those whose folder is gone. A failed poll never stops the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from server.core.registry.loader import ModelLoader
from server.core.registry.sources import RepositorySources
from server.core.registry.table import VersionTable
from server.errors import ConfigError, ServerError

log = logging.getLogger(__name__)

ServerConfigReader = Callable[[], dict[Path, Any]]


class RepositoryPoller:
    def __init__(
        self,
        table: VersionTable,
        loader: ModelLoader,
        sources: RepositorySources,
        *,
        interval_s: float,
        read_server_configs: ServerConfigReader | None = None,
    ) -> None:
        self.table = table
        self.loader = loader
        self.sources = sources
        self.interval_s = interval_s
        self.read_server_configs = read_server_configs
        self._task: asyncio.Task[None] | None = None

    async def poll_once(self) -> None:
        """Load new models, reload changed ones, unload removed ones."""
        on_disk = set(await asyncio.to_thread(self.sources.model_names_on_disk))
        for name in sorted(set(self.table.names()) - on_disk):
            log.info("model '%s' was removed from the repository: unloading", name)
            await self.loader.remove(name)
        for name in sorted(on_disk):
            record = self.table.record(name)
            if record is not None and record.loadable:
                continue  # unloaded by the lifecycle manager: its next request loads what is on disk
            current = await asyncio.to_thread(self.sources.fingerprint, name)
            if record is not None and record.attempted and record.fingerprint == current:
                continue
            if record is not None and record.attempted:
                log.info("model '%s' changed on disk: reloading", name)
            try:
                await self.loader.load(name)
            except ServerError as exc:
                log.error("poll: %s", exc.message)
            finally:
                loaded = self.table.record(name)
                if loaded is not None:
                    loaded.fingerprint = current

    async def reload_server_configs(self) -> None:
        """The server-level config is part of what is polled (its model entries, backend_config)."""
        if self.read_server_configs is None:
            return
        try:
            self.sources.server_configs = await asyncio.to_thread(self.read_server_configs)
        except ConfigError as exc:
            log.error("poll: the server-level config is broken, keeping the previous one: %s", exc.message)

    async def run(self) -> None:
        """Poll every `interval_s` until cancelled."""
        while True:
            await asyncio.sleep(self.interval_s)
            await self.reload_server_configs()
            try:
                await self.poll_once()
            except Exception:  # a poll must never stop the server
                log.exception("polling the model repository failed")

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self.run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
