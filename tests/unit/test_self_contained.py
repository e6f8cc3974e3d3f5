"""A fresh clone is all the project needs: no code, test or build file reads beside or outside it."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("Makefile", "tests", "benchmarks", "tritonctl", "server", "docker")
SKIPPED_DIRS = {"__pycache__", "data", "corpus", "out"}  # vendored data, fuzz inputs, benchmark output
SUFFIXES = {".py", ".md", ".sh", ".toml", ".yaml", ".yml", ".cfg", ".txt", ".pbtxt", ".tmpl", ""}

# Each pattern names a way a file reached outside the clone before.
OUTSIDE = {
    "the shared folder beside the clone": re.compile(r"\.\./shared\b|/\s*[\"']shared[\"']"),
    "a developer machine's absolute path": re.compile(r"/(?:work|home/\w+)/(?:shared|main)\b"),
    "a PEERS.md that is not the project's docs/PEERS.md": re.compile(r"(?<![\w/])PEERS\.md"),
}


def _scanned_files() -> list[Path]:
    files: list[Path] = []
    for name in SCANNED:
        top = REPO_ROOT / name
        if top.is_file():
            files.append(top)
            continue
        for path in top.rglob("*"):
            if path.is_file() and path.suffix in SUFFIXES and not SKIPPED_DIRS & set(path.parts):
                files.append(path)
    return [path for path in files if path.resolve() != Path(__file__).resolve()]


def test_nothing_refers_outside_the_clone() -> None:
    files = _scanned_files()
    assert len(files) > 100, "the scan found too few files to mean anything"
    found = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            for what, pattern in OUTSIDE.items():
                if pattern.search(line):
                    found.append(f"{path.relative_to(REPO_ROOT)}:{number}: {what}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_docs_the_code_points_to_exist() -> None:
    assert (REPO_ROOT / "docs" / "PEERS.md").is_file()
    crds = REPO_ROOT / "tests" / "data" / "kserve-crds"
    assert (crds / "SOURCE.md").is_file() and (crds / "LICENSE").is_file()
    assert sorted(p.name for p in crds.glob("*.yaml")) == [
        "serving.kserve.io_clusterservingruntimes.yaml",
        "serving.kserve.io_inferenceservices.yaml",
        "serving.kserve.io_servingruntimes.yaml",
    ]


def test_a_rollout_without_state_file_records_outside_the_home_folder() -> None:
    from tritonctl.rollout.state import default_state_file

    assert not default_state_file().is_relative_to(Path.home() / ".local")
