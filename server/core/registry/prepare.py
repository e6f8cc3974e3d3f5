"""What a load needs before any instance starts: the checked config, and override folders.

The config comes from the folder's config.pbtxt, the repository's server-level entry, or the
JSON a load request sends (whose file paths may not leave the model, issue #7). Files sent with
a load request live in a temporary folder per model, removed when the model is unloaded or
loaded again from elsewhere.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from server.core.registry.override_paths import check_override_config
from server.errors import LoadError
from server.repository import ModelConfig, check_model_config, config_from_json, load_model_config


def prepare_config(
    name: str, model_dir: Path, config_json: str | None, *, server_config: Any, autocomplete: bool
) -> ModelConfig:
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
        if autocomplete:
            config = fill_defaults(autocomplete_config(config, model_dir))
    else:
        config = load_model_config(model_dir, server_config, autocomplete=autocomplete)
    errors = [d for d in check_model_config(config, model_dir) if d.severity == "error"]
    if errors:
        raise LoadError("\n".join(str(d) for d in errors))
    return config


class OverrideFolders:
    """The temporary folder holding each model's file overrides (model_files.write_override_files)."""

    def __init__(self) -> None:
        self._folders: dict[str, Path] = {}

    def get(self, name: str) -> Path | None:
        return self._folders.get(name)

    def replace(self, name: str, folder: Path | None) -> None:
        """`folder` now holds the model's files (None: none); the previous one is removed."""
        previous = self._folders.pop(name, None)
        if previous is not None and previous != folder:
            self.remove(previous)
        if folder is not None:
            self._folders[name] = folder

    @staticmethod
    def remove(folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)

    def clear(self) -> None:
        for name in list(self._folders):
            self.replace(name, None)
