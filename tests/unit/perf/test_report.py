"""CSV in perf_analyzer's columns, comparisons, plots."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from tritonctl.perf.errors import PerfUsageError
from tritonctl.perf.report import compare_rows, read_json, write_csv, write_json

# The header perf_analyzer 2.51 writes with -f (checked against a real run).
PA_HEADER = (
    "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,"
    "Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency"
)


def _document(key: str, levels: list[float], throughput: float, server: bool = True) -> dict[str, Any]:
    results = []
    for value in levels:
        latency = {"avg": 500.0, "p50": 400.0, "p90": 700.0, "p95": 800.0, "p99": 950.0}
        server_us = {"queue": 50.0, "compute_input": 10.0, "compute_infer": 200.0, "compute_output": 20.0}
        results.append(
            {
                key: value,
                "throughput": throughput * value,
                "latency_us": latency,
                "errors": 0,
                "server_us": server_us if server else None,
            }
        )
    return {"model": "m", "protocol": "grpc", "url": "h:1", "results": results}


def test_csv_matches_perf_analyzer(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    write_csv(_document("concurrency", [1, 2], 1000.0), path)
    lines = path.read_text().splitlines()
    assert lines[0] == PA_HEADER
    row = next(csv.DictReader(lines))
    assert row["Concurrency"] == "1" and row["Inferences/Second"] == "1000"
    assert row["Network+Server Send/Recv"] == "220"  # avg 500 - server 280
    assert row["p99 latency"] == "950"


def test_csv_request_rate_without_server_stats(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    write_csv(_document("request_rate", [50.5], 1.0, server=False), path)
    header, row = path.read_text().splitlines()
    assert header.startswith("Request Rate,Inferences/Second,")
    assert row.split(",")[:5] == ["50.5", "50.5", "0", "500", "0"]


def test_json_roundtrip_and_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    write_json(_document("concurrency", [1], 10.0), path)
    assert read_json(path)["results"][0]["throughput"] == 10.0
    path.write_text('{"model": "m"}')
    with pytest.raises(PerfUsageError, match="no 'results'"):
        read_json(path)


def test_compare_matches_levels() -> None:
    a = _document("concurrency", [1, 2, 4], 100.0)
    b = _document("concurrency", [2, 4, 8], 150.0)
    rows = compare_rows(a, b)
    assert [row["level"] for row in rows] == ["2", "4"]
    assert rows[0]["throughput"] == (200.0, 300.0)


def test_plots_are_pngs(tmp_path: Path) -> None:
    from tritonctl.perf.plot import plot_bars, plot_latency_vs_throughput

    path = tmp_path / "p.png"
    plot_latency_vs_throughput([("a", _document("concurrency", [1, 2], 10.0))], path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot_bars(["x", "y"], [1.0, 2.0], "infer/s", "t", tmp_path / "b.png")
    assert (tmp_path / "b.png").stat().st_size > 1000
