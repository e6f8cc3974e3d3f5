"""The corpus under tests/corpus: broken repositories with their exact diagnostics, valid ones with none
(the seed's examples verbatim among them). `expected.json` lists [code, "file:line:col"] per finding,
paths relative to the case's repo/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from server.repository.diagnostics import Diagnostic
from server.repository.validate import validate_repository
from tritonctl.cli.main import app

CORPUS = Path(__file__).resolve().parents[2] / "corpus"
BROKEN = sorted(p for p in (CORPUS / "broken").iterdir() if p.is_dir())
VALID = sorted(p for p in (CORPUS / "valid").iterdir() if p.is_dir())


def _where(diagnostic: Diagnostic, repo: Path) -> str:
    where = str(Path(diagnostic.file or "").resolve().relative_to(repo)) if diagnostic.file else ""
    if diagnostic.line is not None:
        where += f":{diagnostic.line}:{diagnostic.column}"
    return where


def _found(case: Path) -> tuple[list[list[str]], list[Diagnostic]]:
    expected = json.loads((case / "expected.json").read_text())
    repo = (case / "repo").resolve()
    report = validate_repository(repo, check_models=expected["check_models"])
    return [[d.code, _where(d, repo)] for d in report.diagnostics], report.diagnostics


def test_corpus_is_large_enough() -> None:
    assert len(BROKEN) >= 30
    assert any(case.name.startswith("seed_") for case in VALID)


@pytest.mark.parametrize("case", BROKEN, ids=lambda p: p.name)
def test_broken_case_reports_exact_codes_and_locations(case: Path) -> None:
    expected = json.loads((case / "expected.json").read_text())["diagnostics"]
    found, diagnostics = _found(case)
    assert found == expected
    assert diagnostics, "a broken case must produce findings"
    for diagnostic in diagnostics:
        assert diagnostic.message and diagnostic.fix and diagnostic.file
        if diagnostic.line is not None:  # the location exists in the file
            lines = Path(diagnostic.file).read_text().split("\n")
            assert diagnostic.line <= len(lines)
            assert 1 <= (diagnostic.column or 1) <= len(lines[diagnostic.line - 1]) + 1


@pytest.mark.parametrize("case", VALID, ids=lambda p: p.name)
def test_valid_case_has_no_errors_and_exits_zero(case: Path) -> None:
    expected = json.loads((case / "expected.json").read_text())
    found, diagnostics = _found(case)
    assert found == expected["diagnostics"]
    assert not [d for d in diagnostics if d.is_error]
    flag = "--check-models" if expected["check_models"] else "--no-check-models"
    result = CliRunner().invoke(app, ["validate", str(case / "repo"), flag])
    assert result.exit_code == 0, result.output


def _warning_only(case: Path) -> bool:
    expected = json.loads((case / "expected.json").read_text())["diagnostics"]
    return all(code.startswith("W") for code, _ in expected)


# Every warning-only case, and one error case per family (1xx schema ... 5xx model files).
CLI_CASES = [case for case in BROKEN if _warning_only(case)] + [
    CORPUS / "broken" / name
    for name in ("unknown_field", "no_versions", "bad_dim", "ensemble_cycle", "python_no_execute")
]


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda p: p.name)
def test_cli_exit_code_follows_severity(case: Path) -> None:
    expected = json.loads((case / "expected.json").read_text())
    flag = "--check-models" if expected["check_models"] else "--no-check-models"
    result = CliRunner().invoke(app, ["validate", str(case / "repo"), flag])
    assert result.exit_code == (0 if _warning_only(case) else 1), result.output
    if _warning_only(case):
        strict = CliRunner().invoke(app, ["validate", str(case / "repo"), flag, "--strict"])
        assert strict.exit_code == 1
