"""Find the models of a repository and the config each one runs with.

A model's config comes from its folder's `config.pbtxt` or from the server-level
`model_config_list` (never both). The name defaults to the folder name, `platform: "pytorch"`
means `pytorch_libtorch`, backend and platform fill each other, and a model without either is
recognised by its model file, like Triton does.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.errors import ConfigError
from server.repository.autocomplete import autocomplete_config, fill_defaults
from server.repository.diagnostics import Diagnostic, error, summarize
from server.repository.layout import (
    BACKEND_PLATFORMS,
    DEFAULT_FILENAMES,
    PLATFORM_ALIASES,
    PLATFORM_BACKENDS,
    is_valid_model_name,
)
from server.repository.schema import ConfigSource, ModelConfig, parse_model_config_file
from server.repository.server_config import ServerConfig, server_entry_line, server_entry_source

CONFIG_FILENAME = "config.pbtxt"
# What Path.is_dir() answers False for instead of raising.
_NOT_A_FOLDER = {errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EBADF}


@dataclass
class ModelEntry:
    """One model folder of a repository scan."""

    name: str
    path: Path
    config: Any | None  # ModelConfig; None when it could not be parsed
    config_source: str  # path of config.pbtxt, "<server config>:LINE", or "" (auto-complete only)
    versions: list[int]
    diagnostics: list[Diagnostic]
    source: ConfigSource | None = field(default=None, repr=False)  # field positions, for checks

    @property
    def ok(self) -> bool:
        return self.config is not None and not any(d.is_error for d in self.diagnostics)


def version_folders(model_dir: Path) -> list[int]:
    """Numeric version folders present on disk, ascending (one scandir: loads on demand ask often)."""
    try:
        with os.scandir(model_dir) as entries:
            return sorted(int(entry.name) for entry in entries if entry.name.isdigit() and entry.is_dir())
    except OSError as exc:
        if exc.errno in _NOT_A_FOLDER:
            return []
        raise


def _server_entries(server_config: ServerConfig | None, name: str) -> list[int]:
    if server_config is None:
        return []
    return [i for i, entry in enumerate(server_config.model_config_list) if entry.config.name == name]


def _detect_backend(model_dir: Path) -> str | None:
    """The backend whose default file sits in a version folder (Triton's guess without a config)."""
    for version in reversed(version_folders(model_dir)):
        for backend, filename in DEFAULT_FILENAMES.items():
            runnable = backend in BACKEND_PLATFORMS or backend == "python"
            if runnable and (model_dir / str(version) / filename).exists():
                return backend
    return None


def normalize_identity(config: Any, name: str, model_dir: Path | None = None) -> Any:
    """Name, platform alias, backend <-> platform; modifies and returns `config`."""
    if not config.name:
        config.name = name
    config.platform = PLATFORM_ALIASES.get(config.platform, config.platform)
    if not config.backend and config.platform in PLATFORM_BACKENDS and config.platform != "ensemble":
        config.backend = PLATFORM_BACKENDS[config.platform]
    if not config.platform and config.backend in BACKEND_PLATFORMS:
        config.platform = BACKEND_PLATFORMS[config.backend]
    if not config.platform and not config.backend and model_dir is not None:
        detected = _detect_backend(model_dir)
        if detected is not None:
            config.backend = detected
            config.platform = BACKEND_PLATFORMS.get(detected, "")
    return config


def _resolve(
    model_dir: Path, server_config: ServerConfig | None
) -> tuple[Any | None, str, ConfigSource | None, list[Diagnostic]]:
    """(config as written, config_source, source, diagnostics) for one model folder."""
    name = model_dir.name
    folder_file = model_dir / CONFIG_FILENAME
    entries = _server_entries(server_config, name)
    diagnostics: list[Diagnostic] = []
    config: Any | None = None
    config_source, source = "", None

    if server_config is not None and len(entries) > 1:
        lines = ", ".join(str(server_entry_line(server_config, i) or "?") for i in entries)
        first = server_entry_source(server_config, entries[1])
        diagnostics.append(
            error(
                "E202-duplicate-server-entry",
                f'model "{name}" appears {len(entries)} times in the server config model_config_list '
                f"(lines {lines})",
                "keep a single model_config_list entry per model",
                model=name,
                **first.where("name"),
            )
        )
    if folder_file.is_file():
        try:
            config, source = parse_model_config_file(folder_file)
        except ConfigError as exc:
            return (
                None,
                str(folder_file),
                None,
                [*diagnostics, *(d.with_model(name) for d in exc.diagnostics)],
            )
        config_source = str(folder_file)
        if entries and server_config is not None:
            line = server_entry_line(server_config, entries[0])
            server_place = server_entry_source(server_config, entries[0]).file
            diagnostics.append(
                error(
                    "E201-config-in-two-places",
                    f'model "{name}" is configured twice: in {folder_file} and in the server config '
                    f"model_config_list ({server_place}:{line or '?'})",
                    "keep one: delete the folder's config.pbtxt or remove the model_config_list entry",
                    file=str(folder_file),
                    line=1,
                    column=1,
                    model=name,
                )
            )
    elif entries and server_config is not None:
        config = ModelConfig()
        config.CopyFrom(server_config.model_config_list[entries[0]].config)
        source = server_entry_source(server_config, entries[0])
        config_source = f"<server config>:{server_entry_line(server_config, entries[0]) or '?'}"
    return config, config_source, source, diagnostics


def _missing_config(name: str, model_dir: Path) -> Diagnostic:
    return error(
        "E203-missing-config",
        f'model "{name}" has no config.pbtxt, no server-level model_config_list entry, and no model '
        "file to auto-complete from",
        f"run `tritonctl config generate {model_dir}` or write {model_dir / CONFIG_FILENAME}",
        file=str(model_dir),
        model=name,
    )


def load_model_config(
    model_dir: Path, server_config: ServerConfig | None = None, autocomplete: bool = True
) -> Any:
    """The config a model runs with (see module doc); raises ConfigError with diagnostics.

    With `autocomplete`, inputs/outputs/max_batch_size come from the model file where the config
    leaves them out, and the defaults the server needs are filled in.
    """
    name = model_dir.name
    config, _, _, diagnostics = _resolve(model_dir, server_config)
    if any(d.is_error for d in diagnostics):
        raise ConfigError(summarize(diagnostics), diagnostics)
    if config is None:
        if not autocomplete or _detect_backend(model_dir) is None:
            diagnostic = _missing_config(name, model_dir)
            raise ConfigError(summarize([diagnostic]), [diagnostic])
        config = ModelConfig()
    normalize_identity(config, name, model_dir)
    if config.name != name:
        diagnostic = error(
            "E204-name-mismatch",
            f'config name "{config.name}" does not match the model folder "{name}"',
            f'set name: "{name}" or rename the folder',
            file=str(model_dir / CONFIG_FILENAME),
            model=name,
        )
        raise ConfigError(summarize([diagnostic]), [diagnostic])
    if autocomplete:
        config = fill_defaults(autocomplete_config(config, model_dir))
    return config


def scan_repository(root: Path, server_config: ServerConfig | None = None) -> dict[str, ModelEntry]:
    """Every model folder under `root` (hidden folders skipped), with its config as written.

    Configs are parsed but not normalized, auto-completed or checked (`load_model_config` and
    `check_model_config` do that), so checks still see what the user wrote.
    Server-level entries without a folder are reported too.
    """
    models: dict[str, ModelEntry] = {}
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for model_dir in folders:
        name = model_dir.name
        config, config_source, source, diagnostics = _resolve(model_dir, server_config)
        if not is_valid_model_name(name):
            diagnostics.insert(
                0,
                error(
                    "E205-invalid-model-name",
                    f'"{name}" is not a valid model name',
                    "rename the folder using letters, digits, '_', '.', '-' (at most 128 characters)",
                    file=str(model_dir),
                    model=name,
                ),
            )
        if config is None and not diagnostics:
            if _detect_backend(model_dir) is None:
                diagnostics.append(_missing_config(name, model_dir))
            else:
                config = ModelConfig()
        models[name] = ModelEntry(
            name, model_dir, config, config_source, version_folders(model_dir), diagnostics, source
        )
    if server_config is not None:
        for index, entry in enumerate(server_config.model_config_list):
            name = entry.config.name
            if name in models:
                continue
            where = server_entry_source(server_config, index)
            diagnostic = error(
                "E206-server-entry-without-folder",
                f'the server config configures model "{name or "?"}" but the repository has no '
                f'folder "{name or "?"}" with its versions',
                f"create {root / (name or 'NAME')}/1/ with the model file, or remove the entry",
                model=name or None,
                **where.where("name"),
            )
            models[name or f"<entry {index}>"] = ModelEntry(
                name,
                root / name,
                None,
                f"<server config>:{server_entry_line(server_config, index)}",
                [],
                [diagnostic],
                where,
            )
    return models
