"""`tritonctl validate`: report formats and exit codes (0 valid, 1 findings, 2 usage)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tritonctl.cli.main import app

CORPUS = Path(__file__).resolve().parents[2] / "corpus"
BROKEN = CORPUS / "broken" / "bad_dim" / "repo"
WARNING_ONLY = CORPUS / "broken" / "stray_file" / "repo"
VALID = CORPUS / "valid" / "python_add_sub" / "repo"

runner = CliRunner()


def test_text_report_has_location_code_and_fix() -> None:
    result = runner.invoke(app, ["validate", str(BROKEN)])
    assert result.exit_code == 1
    assert "m/config.pbtxt:4:60: error E314-bad-dim [m]" in result.output
    assert "fix: use a positive size or -1" in result.output
    assert "1 error(s)" in result.output


def test_json_report_shape() -> None:
    result = runner.invoke(app, ["validate", str(BROKEN), str(WARNING_ONLY), "--format", "json"])
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["ok"] is False
    (error,) = document["errors"]
    assert {k: error[k] for k in ("model", "line", "column", "code")} == {
        "model": "m",
        "line": 4,
        "column": 60,
        "code": "E314-bad-dim",
    }
    assert error["file"].endswith("bad_dim/repo/m/config.pbtxt") and error["message"]
    assert [w["code"] for w in document["warnings"]] == ["W212-stray-file"]


def test_github_annotations() -> None:
    result = runner.invoke(app, ["validate", str(BROKEN), "--format", "github"])
    assert result.exit_code == 1
    line = result.stdout.splitlines()[0]
    assert line.startswith("::error file=") and ",line=4,col=60,title=E314-bad-dim::" in line


def test_junit_report_file(tmp_path: Path) -> None:
    report = tmp_path / "report.xml"
    result = runner.invoke(app, ["validate", str(BROKEN), str(VALID), "-f", "junit", "-o", str(report)])
    assert result.exit_code == 1
    suites = ET.parse(report).getroot()
    assert suites.get("tests") == "2" and suites.get("failures") == "1"
    failure = suites.find("./testsuite/testcase[@name='m']/failure")
    assert failure is not None and failure.get("type") == "E314-bad-dim"


def test_junit_default_file_is_written_in_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["validate", str(VALID), "-f", "junit"])
    assert result.exit_code == 0
    assert (tmp_path / "tritonctl-validate.xml").is_file()


def test_warnings_pass_unless_strict() -> None:
    assert runner.invoke(app, ["validate", str(WARNING_ONLY)]).exit_code == 0
    strict = runner.invoke(app, ["validate", str(WARNING_ONLY), "--strict", "-f", "json"])
    assert strict.exit_code == 1
    assert json.loads(strict.stdout)["ok"] is False


@pytest.mark.parametrize(
    "args",
    [
        ["validate", "/no/such/repository"],
        ["validate"],
        ["validate", str(VALID), "--format", "yaml"],
        ["validate", str(VALID), "--server-config", "/no/such/file"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    assert runner.invoke(app, args).exit_code == 2


def test_explicit_server_config(tmp_path: Path) -> None:
    server_config = tmp_path / "server.pbtxt"
    server_config.write_text('model_config_list [ { config { name: "ghost" backend: "python" } } ]')
    result = runner.invoke(app, ["validate", str(VALID), "--server-config", str(server_config), "-f", "json"])
    assert result.exit_code == 1
    assert [e["code"] for e in json.loads(result.stdout)["errors"]] == ["E206-server-entry-without-folder"]
