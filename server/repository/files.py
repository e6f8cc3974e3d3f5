"""Layout rules of one model folder: version folders, the model file in each, stray files, and
model files that contradict the platform (an ONNX config over a TorchScript file...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server.repository.findings import Findings, file_diagnostic
from server.repository.layout import DEFAULT_FILENAMES, backend_of, default_model_filename
from server.repository.lfs import is_lfs_pointer, lfs_pointer_diagnostic

# Files a model folder may hold besides config.pbtxt and version folders.
_ALLOWED_SUFFIXES = (".md", ".txt", ".rst", ".json", ".yaml", ".yml")
_ZIP_MAGIC = b"PK\x03\x04"  # TorchScript archives are zip files


def _looks_like(path: Path) -> str | None:
    """The backend a model file's bytes reveal, when they reveal one."""
    if path.is_dir():
        return None
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError:
        return None
    if head == _ZIP_MAGIC:
        return "pytorch"
    return None


def _other_model_files(version_dir: Path, expected: str) -> list[str]:
    present = [name for name in DEFAULT_FILENAMES.values() if (version_dir / name).exists()]
    return [name for name in present if name != expected]


def _check_version(config: Any, model_dir: Path, version: int, found: Findings, check_contents: bool) -> None:
    backend = backend_of(config)
    filename = default_model_filename(config)
    version_dir = model_dir / str(version)
    if filename is None:
        return
    model_file = version_dir / filename
    if not model_file.exists():
        others = _other_model_files(version_dir, filename)
        if others:
            file_diagnostic(
                found,
                "E214-platform-contradicts-file",
                version_dir,
                f"the config says {backend or 'this backend'} (expects {filename}) but version {version} "
                f"holds {', '.join(others)}",
                "fix platform/backend in config.pbtxt to match the file, or put the right file there",
            )
        else:
            file_diagnostic(
                found,
                "E211-missing-model-file",
                version_dir,
                f"version {version} has no model file {filename}",
                f"put the model at {model_file}, or set default_model_filename to the file's name",
            )
        return
    if not check_contents:  # --no-check-models: names only; CI checkouts often hold placeholders
        return
    if is_lfs_pointer(model_file):
        found.items.append(lfs_pointer_diagnostic(model_file, found.model))
        return
    revealed = _looks_like(model_file)
    if revealed == "pytorch" and backend not in ("pytorch", "python"):
        file_diagnostic(
            found,
            "E214-platform-contradicts-file",
            model_file,
            f"{filename} is a TorchScript/zip archive but the config says {backend}",
            'set platform: "pytorch_libtorch" and rename the file model.pt, or export the right format',
        )
    elif backend == "pytorch" and revealed is None and model_file.is_file() and model_file.stat().st_size:
        file_diagnostic(
            found,
            "E214-platform-contradicts-file",
            model_file,
            f"{filename} is not a TorchScript archive (torch.jit.save writes a zip file)",
            "save the model with torch.jit.save(torch.jit.script(model), 'model.pt'), or fix the platform",
        )


def _is_documentation(path: Path) -> bool:
    return path.suffix.lower() in _ALLOWED_SUFFIXES or path.name.lower().startswith("readme")


def _check_extras(config: Any, model_dir: Path, found: Findings) -> None:
    labels = {out.label_filename for out in config.output if out.label_filename}
    for entry in sorted(model_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if not entry.name.isdigit():
                file_diagnostic(
                    found,
                    "W213-non-numeric-folder",
                    entry,
                    f'folder "{entry.name}" is not a version number and is ignored',
                    "name version folders 1, 2, 3, ... or move this folder out of the model",
                    is_error=False,
                )
        elif entry.name != "config.pbtxt" and entry.name not in labels and not _is_documentation(entry):
            file_diagnostic(
                found,
                "W212-stray-file",
                entry,
                f'file "{entry.name}" sits next to config.pbtxt, outside any version folder',
                f"move it into a version folder (e.g. 1/{entry.name}) or remove it",
                is_error=False,
            )


def check_layout(config: Any, model_dir: Path, found: Findings, check_contents: bool = True) -> list[int]:
    """Check the folder against `config`; return the numeric versions present.

    Without `check_contents` no model file is opened: only names and existence are checked."""
    if not model_dir.is_dir():
        return []
    versions = sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    if not versions:
        file_diagnostic(
            found,
            "E210-no-versions",
            model_dir,
            "the model has no numeric version folder",
            f"create {model_dir / '1'}/ and put the model file in it",
        )
    if backend_of(config) is None and not config.platform:  # an unknown platform is reported by rules
        found.error(
            "E301-missing-backend",
            "",
            "the config names neither platform nor backend, and no version folder holds a known model file",
            'add backend: "python" | "onnxruntime" | "pytorch" | "tensorrt", or platform: "ensemble"',
        )
    elif backend_of(config) is not None:
        for version in versions:
            _check_version(config, model_dir, version, found, check_contents)
    _check_extras(config, model_dir, found)
    return versions
