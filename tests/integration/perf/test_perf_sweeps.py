"""`tritonctl perf` against real servers: sweeps in both loop modes, outputs, errors (short windows)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.integration.perf.targets import Target
from tritonctl.cli.main import app

pytestmark = pytest.mark.integration

runner = CliRunner()
# Short windows: these tests check behaviour, not speed.
QUICK = ["-p", "250", "--warmup-ms", "100", "-r", "3", "-s", "50"]
RESULT_KEYS = {"throughput", "latency_us", "errors", "server_us"}
SERVER_KEYS = {"queue", "compute_input", "compute_infer", "compute_output"}


def run_perf(*args: str) -> Any:
    result = runner.invoke(app, ["perf", *args])
    assert result.exit_code == 0, result.output
    return result


def check_results(document: dict[str, Any], level_key: str, levels: list[float], *, server: bool) -> None:
    assert set(document) == {"model", "protocol", "url", "results"}
    assert [entry[level_key] for entry in document["results"]] == levels
    for entry in document["results"]:
        assert set(entry) == RESULT_KEYS | {level_key}
        latency = entry["latency_us"]
        assert set(latency) == {"avg", "p50", "p90", "p95", "p99"}
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p95"] <= latency["p99"]
        assert entry["throughput"] > 0 and entry["errors"] == 0
        if server:
            assert set(entry["server_us"]) == SERVER_KEYS
            assert entry["server_us"]["compute_infer"] > 0
        else:
            assert entry["server_us"] is None


def test_concurrency_sweep_over_grpc(target: Target, tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    table = tmp_path / "run.csv"
    plot = tmp_path / "run.png"
    args = ["identity", "-u", target.grpc_url, "--concurrency-range", "1:2"]
    result = run_perf(*args, *QUICK, "--json", str(out), "--csv", str(table), "--plot", str(plot))
    document = json.loads(out.read_text())
    check_results(document, "concurrency", [1, 2], server=True)
    assert document["protocol"] == "grpc" and document["url"] == target.grpc_url
    rows = list(csv.DictReader(table.read_text().splitlines()))
    assert [row["Concurrency"] for row in rows] == ["1", "2"]
    assert float(rows[0]["Inferences/Second"]) == pytest.approx(
        document["results"][0]["throughput"], rel=1e-3
    )
    assert int(rows[1]["p99 latency"]) == round(document["results"][1]["latency_us"]["p99"])
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert "identity" in result.output


def test_request_rate_sweep_over_http(target: Target, tmp_path: Path) -> None:
    out = tmp_path / "rate.json"
    args = ["identity", "-i", "http", "-u", target.http_url, "--request-rate-range", "40:80:40"]
    run_perf(*args, "--request-distribution", "poisson", *QUICK, "--json", str(out))
    document = json.loads(out.read_text())
    check_results(document, "request_rate", [40.0, 80.0], server=True)
    for entry in document["results"]:
        # Open loop: the server keeps up at these rates, so throughput follows the schedule.
        assert entry["throughput"] == pytest.approx(entry["request_rate"], rel=0.5)


def test_count_windows_with_batches(target: Target, tmp_path: Path) -> None:
    out = tmp_path / "count.json"
    args = [
        "mlp",
        "-u",
        target.grpc_url,
        "--request-count",
        "20",
        "-b",
        "4",
        "--concurrency-range",
        "2",
    ]
    run_perf(*args, "--warmup-ms", "100", "-r", "3", "-s", "90", "--json", str(out))
    check_results(json.loads(out.read_text()), "concurrency", [2], server=True)


def test_every_request_refused_exits_1_with_the_server_message(target: Target) -> None:
    # INPUT0 is FP32[16]: sending 3 values makes the server refuse every request.
    result = runner.invoke(app, ["perf", "identity", "-u", target.grpc_url, "--shape", "INPUT0:3", *QUICK])
    assert result.exit_code == 1, result.output
    assert "every request failed" in result.output and "INVALID_ARGUMENT" in result.output


def test_unknown_model_exits_1(target: Target) -> None:
    result = runner.invoke(app, ["perf", "no_such_model", "-i", "http", "-u", target.http_url, *QUICK])
    assert result.exit_code == 1 and "no_such_model" in result.output


def test_latency_budget_stops_the_sweep(target: Target, tmp_path: Path) -> None:
    out = tmp_path / "budget.json"
    args = ["identity", "-u", target.grpc_url, "--concurrency-range", "1:4", "--latency-budget-ms", "0.001"]
    result = run_perf(*args, *QUICK, "--json", str(out))
    assert [entry["concurrency"] for entry in json.loads(out.read_text())["results"]] == [1]
    assert "over the latency budget" in result.output


def test_tune_explains_that_it_needs_explicit_mode(static_target: Target) -> None:
    args = ["tune", "mlp", "-u", static_target.grpc_url, "--instances", "2", *QUICK]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "explicit model-control mode" in result.output
