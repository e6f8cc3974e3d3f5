"""The model repositories on disk, as the loader and the poller see them.

Folders of every repository, the server-level config of each (its `model_config_list` entries
count as part of a model; poll mode replaces `server_configs` when the file changes), and the
fingerprint poll mode compares to decide what to reload.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server.core.registry.model_folders import folder_fingerprint
from server.errors import ServerError
from server.repository import ModelConfig, load_model_config


class RepositorySources:
    def __init__(self, repositories: list[Path], server_configs: dict[Path, Any] | None = None) -> None:
        self.repositories = [path.resolve() for path in repositories]
        self.server_configs: dict[Path, Any] = dict(server_configs or {})

    def model_names_on_disk(self) -> list[str]:
        """Every model folder of every repository (for the index, start-up and polling)."""
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

    def server_config_of(self, model_dir: Path) -> Any:
        """The server-level config of the repository holding `model_dir` (None: there is none)."""
        return self.server_configs.get(model_dir.parent.resolve())

    def config_on_disk(self, name: str) -> ModelConfig | None:
        """The config as written (not completed), or None when missing or unreadable."""
        model_dir = self.find_model_dir(name)
        if model_dir is None:
            return None
        try:
            return load_model_config(model_dir, self.server_config_of(model_dir), autocomplete=False)
        except ServerError:
            return None

    def fingerprint(self, name: str) -> tuple[Any, ...] | None:
        """What poll mode compares: every file's path, size and mtime, plus a server-level entry."""
        model_dir = self.find_model_dir(name)
        if model_dir is None:
            return None
        items = folder_fingerprint(model_dir)
        server_config = self.server_config_of(model_dir)
        entry = b""
        if server_config is not None:
            for item in server_config.model_config_list:
                if item.config.name == name:
                    entry = item.config.SerializeToString()
        return (items, entry)
