"""walk_folder lists what `sorted(Path.rglob("*"))` + `Path.stat` listed (fingerprints and instance
keys were read that way), in the same order, with the same links entered or not."""

from __future__ import annotations

import os
from pathlib import Path

from server.repository.folder_walk import walk_folder


def _tree(root: Path) -> Path:
    model = root / "m"
    (model / "1" / "sub").mkdir(parents=True)
    (model / "1" / "model.onnx").write_bytes(b"x" * 10)
    (model / "1" / "sub" / "weights.bin").write_bytes(b"y" * 3)
    (model / "1" / "__pycache__").mkdir()
    (model / "1" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"z")
    (model / "config.pbtxt").write_text('name: "m"')
    (model / "a-b").write_text("dash sorts before slash")
    elsewhere = root / "elsewhere"
    (elsewhere / "deep").mkdir(parents=True)
    (elsewhere / "model.pt").write_bytes(b"p")
    (elsewhere / "deep" / "more.bin").write_bytes(b"q")
    (model / "2").symlink_to(elsewhere, target_is_directory=True)  # a linked version folder
    (model / "1" / "linked").symlink_to(elsewhere, target_is_directory=True)  # deeper: not entered
    (model / "1" / "dangling").symlink_to(root / "missing")
    return model


def _by_pathlib(model: Path, top_links: bool) -> list[tuple[str, int, int, bool]]:
    found = []
    paths = sorted(model.rglob("*"))
    if top_links:  # what instance_key did: each top entry's own rglob (a linked top folder entered)
        paths = sorted({*paths, *(p for top in model.iterdir() if top.is_dir() for p in top.rglob("*"))})
    for path in paths:
        if "__pycache__" in path.relative_to(model).parts:
            continue
        try:
            info = path.stat()
        except OSError:
            continue
        found.append((str(path.relative_to(model)), info.st_size, info.st_mtime_ns, path.is_dir()))
    return found


def test_the_walk_lists_what_pathlib_listed(tmp_path: Path) -> None:
    model = _tree(tmp_path)
    for top_links in (False, True):
        walked = [
            (e.relative, e.size, e.mtime_ns, e.is_dir) for e in walk_folder(model, enter_top_links=top_links)
        ]
        assert walked == _by_pathlib(model, top_links)
    names = [e.relative for e in walk_folder(model)]
    assert "2/model.pt" not in names and "1/linked/model.pt" not in names and "1/dangling" not in names
    assert "2/deep/more.bin" in [e.relative for e in walk_folder(model, enter_top_links=True)]
    assert all("__pycache__" not in e.parts for e in walk_folder(model, enter_top_links=True))


def test_a_missing_folder_has_no_entries(tmp_path: Path) -> None:
    assert walk_folder(tmp_path / "gone") == []
    os.mkfifo(tmp_path / "fifo")  # not a folder: nothing below it
    assert walk_folder(tmp_path / "fifo") == []
