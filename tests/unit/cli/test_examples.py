"""The bundled example repository (`make serve`): built idempotently, valid with model checks."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from tritonctl.cli.main import app
from tritonctl.examples import EXAMPLE_MODELS, main


def test_examples_build_twice_and_validate(tmp_path: Path) -> None:
    repo = tmp_path / "examples"
    assert main([str(repo)]) == 0
    first = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    assert main([str(repo)]) == 0  # idempotent: same files, same bytes
    assert {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()} == first
    assert sorted(p.name for p in repo.iterdir()) == sorted(EXAMPLE_MODELS)
    result = CliRunner().invoke(app, ["validate", str(repo), "--check-models", "--strict"])
    assert result.exit_code == 0, result.output


def test_usage() -> None:
    assert main([]) == 2
