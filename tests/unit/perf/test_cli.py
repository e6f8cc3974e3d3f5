"""`tritonctl perf` / `tritonctl tune` flags: help, shorthand, clear usage errors (exit 2), compare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tritonctl.cli.main import app

runner = CliRunner()


def test_perf_help_lists_both_commands() -> None:
    result = runner.invoke(app, ["perf", "--help"])
    assert result.exit_code == 0
    assert "run" in result.output and "compare" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["perf", "m", "--concurrency-range", "1:4", "--request-rate-range", "10"], "not both"),
        (["perf", "run", "m", "--concurrency-range", "4:1"], "END must not be smaller"),
        (["perf", "m", "--shape", "INPUT0"], "expected NAME:DIMS"),
        (["perf", "m", "--dtype", "x:FLOAT9"], "unknown datatype"),
        (["perf", "m", "--input-data", "/nonexistent/file.json"], "expected random, zero"),
        (["perf", "m", "-u", "https://h:1"], "TLS"),
    ],
)
def test_bad_flags_exit_2_with_the_reason(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_shorthand_reaches_the_run_command() -> None:
    # `perf MODEL` is `perf run MODEL`: an unknown option is reported by the run command.
    result = runner.invoke(app, ["perf", "m", "--no-such-flag"])
    assert result.exit_code == 2 and "No such option" in result.output


def test_typer_rejects_out_of_range_values() -> None:
    result = runner.invoke(app, ["perf", "m", "-b", "0"])
    assert result.exit_code == 2 and "batch-size" in result.output


def test_unreachable_server_exits_1() -> None:
    result = runner.invoke(app, ["perf", "m", "-i", "http", "-u", "127.0.0.1:1"])
    assert result.exit_code == 1 and "cannot reach the server" in result.output


def _write(path: Path, throughput: float) -> Path:
    latency = {"avg": 1.0, "p50": 1.0, "p90": 2.0, "p95": 2.0, "p99": 3.0}
    result = {
        "concurrency": 1,
        "throughput": throughput,
        "latency_us": latency,
        "errors": 0,
        "server_us": None,
    }
    path.write_text(json.dumps({"model": "m", "protocol": "grpc", "url": "h:1", "results": [result]}))
    return path


def test_compare_prints_changes_and_plots(tmp_path: Path) -> None:
    a, b = _write(tmp_path / "a.json", 100.0), _write(tmp_path / "b.json", 150.0)
    result = runner.invoke(app, ["perf", "compare", str(a), str(b), "--plot", str(tmp_path / "c.png")])
    assert result.exit_code == 0, result.output
    assert "+50.0%" in result.output
    assert (tmp_path / "c.png").exists()


def test_compare_without_shared_levels(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.json", 100.0)
    b = tmp_path / "b.json"
    b.write_text(a.read_text().replace('"concurrency": 1', '"concurrency": 2'))
    result = runner.invoke(app, ["perf", "compare", str(a), str(b)])
    assert result.exit_code == 2 and "share no load level" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tune", "m"], "nothing to tune"),
        (["tune", "m", "--instances", "1,x"], "not a whole number"),
        (["tune", "m", "--instances", "0,1"], "at least 1"),
        (["tune", "m", "--max-queue-delay-us", "0,0"], "repeated"),
    ],
)
def test_tune_bad_flags(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
