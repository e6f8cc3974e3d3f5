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


def test_readme_infer_and_models_commands_name_models_that_exist() -> None:
    """A reader runs them against `make serve` (the examples), a model an earlier command scaffolds,
    or one whose config the README spells out (`name: "pre"`)."""
    import re
    import shlex

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")
    lines = [line for line in readme.splitlines() if line.startswith("tritonctl ")]
    commands = [shlex.split(line.rstrip("\\ "), comments=True) for line in lines]
    scaffolded = {m.group(1) for m in re.finditer(r"tritonctl init \S+ .*?(?:-m|--model) (\S+)", readme)}
    scaffolded |= set(re.findall(r'`name: "([^"]+)"`', readme))
    named = [c[2] for c in commands if c[1] == "infer"]
    named += [c[3] for c in commands if c[1] == "models" and len(c) > 3 and not c[3].startswith("-")]
    assert named
    unknown = sorted(set(named) - set(EXAMPLE_MODELS) - scaffolded)
    assert not unknown, f"README commands name models nobody has: {unknown}"
