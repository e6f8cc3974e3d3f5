"""version_folders: the numeric version folders of a model, ascending, as Path.is_dir() sees them."""

from __future__ import annotations

from pathlib import Path

from server.repository.loader import version_folders


def test_numeric_folders_ascending_and_nothing_else(tmp_path: Path) -> None:
    for name in ("10", "2", "9", "notes", "v3"):
        (tmp_path / name).mkdir()
    (tmp_path / "4").write_text("a file named like a version")
    (tmp_path / "7").symlink_to(tmp_path / "2")  # a link to a folder is a folder, as for is_dir()
    (tmp_path / "8").symlink_to(tmp_path / "missing")  # a dangling link is not
    assert version_folders(tmp_path) == [2, 7, 9, 10]


def test_a_missing_model_folder_or_a_file_has_no_versions(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    assert version_folders(tmp_path / "missing") == []
    assert version_folders(tmp_path / "file") == []
