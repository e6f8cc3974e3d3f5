"""Model folder files the registry touches besides configs: what poll mode compares, and the
files a load request may override (written into a fresh temporary folder, never elsewhere)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path, PurePosixPath

from server.errors import LoadError
from server.repository.folder_walk import walk_folder


def folder_fingerprint(model_dir: Path) -> tuple[tuple[str, int, int], ...]:
    """Every file's relative path, size and mtime (poll mode reloads a model when it changes)."""
    return tuple((entry.relative, entry.size, entry.mtime_ns) for entry in walk_folder(model_dir))


def write_override_files(name: str, config_json: str | None, files: dict[str, bytes]) -> Path:
    """Write `file:<relative path>` overrides into a fresh temporary folder; returns the folder
    (the model lies in `<folder>/<name>`). Raises LoadError for a path that would leave it."""
    if not config_json:
        raise LoadError(
            f"failed to load '{name}': Load parameter 'config' must be specified for model file override"
        )
    root = Path(tempfile.mkdtemp(prefix="tritonctl-override-"))
    model_dir = root / name
    try:
        for key, content in files.items():
            relative = PurePosixPath(key.removeprefix("file:"))
            if (
                not relative.parts
                or relative.is_absolute()
                or "\\" in key
                or "\x00" in key
                or any(part in ("", ".", "..") for part in relative.parts)
            ):
                raise LoadError(f"file override '{key}' must be a relative path inside the model folder")
            target = model_dir.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "xb") as handle:  # "x": never follow or replace anything
                handle.write(content)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return root
