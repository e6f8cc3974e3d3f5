"""Tables of `tritonctl models` print long model names whole, in a pipe and on a narrow terminal."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console
from rich.table import Table
from typer.testing import CliRunner

from tritonctl.cli import models, tables
from tritonctl.cli.main import app

LONG_NAME = "resnet50_int8_calibrated_on_imagenet_val_with_dynamic_batching_and_four_instances"


@pytest.fixture
def long_named_server(monkeypatch: pytest.MonkeyPatch) -> None:
    index = [{"name": LONG_NAME, "version": "1", "state": "READY", "reason": ""}]
    statistics = [{"name": LONG_NAME, "version": "1", "inference_count": 3, "execution_count": 1}]

    def answer(url: str | None, protocol: Any, action: Any) -> Any:
        class Connection:
            def repository_index(self, ready: bool) -> list[dict[str, str]]:
                return index

            def model_statistics(self, model: str, version: str) -> list[dict[str, Any]]:
                return statistics

        return action(Connection())

    monkeypatch.setattr(models, "_run", answer)


@pytest.mark.parametrize("command", [["models", "list"], ["models", "stats"]])
def test_a_long_model_name_is_printed_whole_into_a_pipe(long_named_server: None, command: list[str]) -> None:
    result = CliRunner().invoke(app, command, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    (row,) = [line for line in result.output.splitlines() if LONG_NAME in line]
    assert "1" in row.replace(LONG_NAME, "")  # the version stays on the name's line


def test_on_a_narrow_terminal_a_long_name_folds_instead_of_ending_in_an_ellipsis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = io.StringIO()
    narrow = {"file": out, "width": 60, "force_terminal": True, "color_system": None}
    monkeypatch.setattr("rich.console.Console", lambda **kw: Console(**narrow, **kw))
    table = Table()
    for column in ("model", "version", "state", "reason"):
        table.add_column(column)
    table.add_row(LONG_NAME, "1", "READY", "")
    tables.print_table(table)
    text = out.getvalue()
    assert "…" not in text
    cells = "".join(line.split("│")[1].strip() for line in text.splitlines() if line.count("│") > 2)
    assert LONG_NAME in cells
