"""`--help` at 80 columns: flags show no `<bool>` type, and no option name or help word is cut."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from tritonctl.cli.main import app


def _command_paths(command: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        paths += _command_paths(sub, (*prefix, name))
    return paths


COMMANDS = _command_paths(typer.main.get_command(app))


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(path) or "tritonctl")
def test_help_has_no_bool_type_and_cuts_nothing(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output
    assert "…" not in result.output, result.output
