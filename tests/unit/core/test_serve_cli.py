"""`tritonctl serve` usage errors (the running server is covered by tests/integration/core)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from tritonctl.cli.main import app

runner = CliRunner()


def flat(output: str) -> str:
    """The output without Rich's box drawing and line wrapping."""
    return " ".join(output.replace("│", " ").split())


def test_load_model_needs_explicit_mode(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", f"--model-repository={tmp_path}", "--load-model=m"])
    assert result.exit_code == 2
    assert "--load-model can only be used with --model-control-mode=explicit" in flat(result.output)


def test_triton_boolean_spelling_is_checked(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", f"--model-repository={tmp_path}", "--strict-readiness=maybe"])
    assert result.exit_code == 2
    assert "expects true or false" in flat(result.output)


def test_unknown_control_mode_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["serve", "--model-repository", str(tmp_path), "--model-control-mode", "often"]
    )
    assert result.exit_code == 2


def test_a_repository_is_required() -> None:
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "--model-repository" in result.output
