"""Perf results on paper: JSON (issue #5 layout), CSV (perf_analyzer's columns), tables, comparisons.

Works on the JSON document (`SweepReport.to_json()` or a file written earlier), so `perf compare`
treats fresh and saved runs alike.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from tritonctl.perf.errors import PerfUsageError

# perf_analyzer's `-f` columns; existing spreadsheets read these names.
CSV_COLUMNS = (
    "Inferences/Second",
    "Client Send",
    "Network+Server Send/Recv",
    "Server Queue",
    "Server Compute Input",
    "Server Compute Infer",
    "Server Compute Output",
    "Client Recv",
    "p50 latency",
    "p90 latency",
    "p95 latency",
    "p99 latency",
)
LATENCY_KEYS = ("avg", "p50", "p90", "p95", "p99")
SERVER_KEYS = ("queue", "compute_input", "compute_infer", "compute_output")


def level_key(result: dict[str, Any]) -> tuple[str, float]:
    """("concurrency", 4) or ("request_rate", 250.0)."""
    if "concurrency" in result:
        return "concurrency", float(result["concurrency"])
    return "request_rate", float(result["request_rate"])


def level_text(result: dict[str, Any]) -> str:
    mode, value = level_key(result)
    return f"{int(value)}" if mode == "concurrency" else f"{value:g}/s"


def write_json(document: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(document, indent=2) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PerfUsageError(f"{path}: cannot read a perf JSON file ({exc})") from exc
    if not isinstance(document, dict) or not isinstance(document.get("results"), list):
        raise PerfUsageError(f"{path}: not a `tritonctl perf --json` file (no 'results' list)")
    return document


def csv_rows(document: dict[str, Any]) -> list[list[str]]:
    results = document["results"]
    first = "Concurrency" if not results or "concurrency" in results[0] else "Request Rate"
    rows = [[first, *CSV_COLUMNS]]
    for result in results:
        latency = result["latency_us"]
        server = result.get("server_us") or dict.fromkeys(SERVER_KEYS, 0.0)
        server_total = sum(server[key] for key in SERVER_KEYS)
        network = max(latency["avg"] - server_total, 0.0)
        mode, value = level_key(result)
        values = [
            result["throughput"],
            0,  # client send: the payload is prebuilt, sending is part of the network time
            network,
            *(server[key] for key in SERVER_KEYS),
            0,  # client recv: replies are not decoded
            *(latency[key] for key in ("p50", "p90", "p95", "p99")),
        ]
        rows.append(
            [
                str(int(value)) if mode == "concurrency" else f"{value:g}",
                f"{values[0]:g}",
                *(str(round(v)) for v in values[1:]),
            ]
        )
    return rows


def write_csv(document: dict[str, Any], path: Path) -> None:
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(csv_rows(document))


def results_table(document: dict[str, Any], title: str | None = None) -> Any:
    from rich.table import Table

    results = document["results"]
    first = "conc." if not results or "concurrency" in results[0] else "req/s"
    default_title = f"{document['model']} · {document['protocol']} · {document['url']} (latencies in µs)"
    table = Table(title=title or default_title)
    for header in (first, "infer/s", *LATENCY_KEYS, "errors", "queue", "infer"):
        table.add_column(header, justify="right")
    for result in results:
        latency = result["latency_us"]
        server = result.get("server_us")
        table.add_row(
            level_text(result),
            f"{result['throughput']:.1f}",
            *(f"{latency[key]:.0f}" for key in LATENCY_KEYS),
            str(result["errors"]),
            f"{server['queue']:.0f}" if server else "-",
            f"{server['compute_infer']:.0f}" if server else "-",
        )
    return table


def _change(before: float, after: float) -> str:
    if before == 0:
        return "n/a"
    return f"{(after - before) / before * 100:+.1f}%"


def compare_rows(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per load level present in both runs: throughput and latency side by side."""
    b_by_level = {level_key(result): result for result in b["results"]}
    rows = []
    for result in a["results"]:
        other = b_by_level.get(level_key(result))
        if other is None:
            continue
        row: dict[str, Any] = {
            "level": level_text(result),
            "throughput": (result["throughput"], other["throughput"]),
        }
        for key in ("p50", "p99"):
            row[key] = (result["latency_us"][key], other["latency_us"][key])
        rows.append(row)
    return rows


def compare_table(a: dict[str, Any], b: dict[str, Any], a_name: str, b_name: str) -> Any:
    from rich.table import Table

    rows = compare_rows(a, b)
    if not rows:
        raise PerfUsageError(f"{a_name} and {b_name} share no load level (concurrency or request rate)")
    table = Table(title=f"{a_name} → {b_name}")
    table.add_column("level", justify="right")
    for header in ("infer/s", "p50 µs", "p99 µs"):
        table.add_column(header, justify="right")
    for row in rows:
        cells = [row["level"]]
        for metric, digits in (("throughput", 1), ("p50", 0), ("p99", 0)):
            before, after = row[metric]
            cells.append(f"{before:.{digits}f} → {after:.{digits}f} ({_change(before, after)})")
        table.add_row(*cells)
    return table
