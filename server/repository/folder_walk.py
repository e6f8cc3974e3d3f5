"""One pass over a model folder's files with os.scandir (path, size, mtime, folder or not).

What poll mode compares (a folder's fingerprint) and what a version's instances depend on
(model_version.instance_key) are both read from it. It replaces `Path.rglob` + `Path.stat`, which
cost ~5x more in the main process, where loads on demand run dozens of times a second next to
the requests. Same order and same links as `sorted(Path.rglob("*"))` on Python 3.11: sorted by
path components; a linked folder is listed but not entered, except, with `enter_top_links`, one
directly in the model folder (what `top.rglob` did for a linked version folder).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

_SKIPPED = "__pycache__"  # written by python models as they load: never a change of the model


class FolderEntry(NamedTuple):
    parts: tuple[str, ...]  # components below the model folder
    size: int
    mtime_ns: int
    is_dir: bool

    @property
    def relative(self) -> str:
        return "/".join(self.parts)


def walk_folder(model_dir: Path, *, enter_top_links: bool = False) -> list[FolderEntry]:
    """Every file and folder below `model_dir` (not `__pycache__` nor what it holds), sorted."""
    found: list[FolderEntry] = []
    _walk(os.fspath(model_dir), (), found, enter_top_links)
    found.sort(key=lambda entry: entry.parts)
    return found


def _walk(folder: str, parts: tuple[str, ...], found: list[FolderEntry], enter_links: bool) -> None:
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if entry.name == _SKIPPED:
            continue
        try:
            info = entry.stat()
            is_dir = entry.is_dir()
        except OSError:  # a dangling link, or removed meanwhile
            continue
        here = (*parts, entry.name)
        found.append(FolderEntry(here, info.st_size, info.st_mtime_ns, is_dir))
        if is_dir and (enter_links or not entry.is_symlink()):
            _walk(entry.path, here, found, False)
