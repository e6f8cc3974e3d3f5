"""`tritonctl rollout` flags and exit codes that need no server (the rest: tests/integration/rollout)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tritonctl.cli.main import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--steps", "50,10"], "steps must rise"),
        (["--steps", "0"], "every step must be a percentage in 1..100"),
        (["--inputs", "/no/such/inputs.json"], "--inputs /no/such/inputs.json: no such file"),
        (["--hold-secs", "-1"], "--hold-secs must be >= 0"),
    ],
)
def test_start_refuses_bad_flags_with_exit_2(tmp_path: Path, flags: list[str], message: str) -> None:
    state = ["--state-file", str(tmp_path / "s.json")]
    result = runner.invoke(app, ["rollout", "start", "m", "--to-version", "2", *flags, *state])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_start_without_a_server_fails_with_exit_1(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "rollout",
            "start",
            "m",
            "--to-version",
            "2",
            "-u",
            "127.0.0.1:9",
            "-i",
            "http",
            "--state-file",
            str(tmp_path / "s.json"),
        ],
    )
    assert result.exit_code == 1
    assert "error:" in result.output
    assert not (tmp_path / "s.json").exists()  # nothing started, nothing recorded


def test_rollback_without_a_recorded_rollout_says_where_it_looked(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    result = runner.invoke(app, ["rollout", "rollback", "m", "--state-file", str(state)])
    assert result.exit_code == 1
    assert f"no rollout of 'm' in {state}" in result.output
