"""Git LFS pointer files: what a checkout holds in place of a model file until `git lfs pull`.

A pointer is a small text file (the spec caps it at 1024 bytes) that starts with the spec line,
e.g. "version https://git-lfs.github.com/spec/v1\\noid sha256:...\\nsize 123\\n".
"""

from __future__ import annotations

from pathlib import Path

from server.repository.diagnostics import Diagnostic, error

_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/"
_POINTER_MAX_BYTES = 1024
LFS_POINTER_CODE = "E215-git-lfs-pointer"


def is_lfs_pointer(path: Path) -> bool:
    """True when `path` is a regular file holding a git-lfs pointer (reads at most its first bytes)."""
    try:
        if not path.is_file() or path.stat().st_size > _POINTER_MAX_BYTES:
            return False
        with path.open("rb") as handle:
            return handle.read(len(_POINTER_PREFIX)) == _POINTER_PREFIX
    except OSError:
        return False


def lfs_pointer_diagnostic(path: Path, model: str | None = None) -> Diagnostic:
    """The finding for a model file that is a git-lfs pointer."""
    return error(
        LFS_POINTER_CODE,
        f"{path.name} is a git-lfs pointer, not the model: the checkout holds only the pointer text; "
        "run `git lfs pull`",
        "run `git lfs pull` in the checkout (in CI, enable LFS in the checkout step), or pass "
        "--no-check-models to check only names and layout",
        file=str(path),
        model=model,
    )
