"""What `tune` leaves behind: a ranked table, the winning config.pbtxt, a Markdown report with plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tritonctl.perf.tune import CandidateResult, TuneReport

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2

TOP_CURVES = 5


def config_text(config: model_config_pb2.ModelConfig) -> str:
    """config.pbtxt text (protobuf text format of Triton's ModelConfig)."""
    from google.protobuf import text_format

    return str(text_format.MessageToString(config))


def write_config(config: model_config_pb2.ModelConfig, path: Path) -> None:
    path.write_text(config_text(config))


def _row(result: CandidateResult, objective: str) -> dict[str, Any]:
    best = result.best
    return {
        "candidate": result.candidate.label,
        "feasible": result.feasible,
        "error": result.error,
        "level": None if best is None else best.to_json(),
        "score": None if best is None else result.score(objective),  # type: ignore[arg-type]
        "sweep": None if result.report is None else result.report.to_json()["results"],
    }


def report_json(report: TuneReport) -> dict[str, Any]:
    return {
        "model": report.model,
        "objective": report.objective,
        "baseline": _row(report.baseline, report.objective),
        "ranked": [_row(result, report.objective) for result in report.ranked()],
        "winner": None if report.winner is None else report.winner.candidate.label,
        "restored": report.restored,
    }


def _level_cell(result: CandidateResult) -> tuple[str, str, str]:
    if result.best is None:
        return "-", "-", "-"
    level = result.best.to_json()
    load = f"c={level['concurrency']}" if "concurrency" in level else f"{level['request_rate']:g}/s"
    return load, f"{result.best.throughput:.1f}", f"{result.best.latency_us['p99'] / 1000:.2f}"


def ranked_table(report: TuneReport) -> Any:
    from rich.table import Table

    table = Table(title=f"tune {report.model}: best {report.objective} per config (ranked)")
    for header in ("#", "config", "load", "infer/s", "p99 ms", "vs original", "note"):
        table.add_column(header, justify="left" if header in ("config", "note") else "right")
    base = report.baseline.best.throughput if report.baseline.best else 0.0
    load, throughput, p99 = _level_cell(report.baseline)
    table.add_row("-", "original (as loaded)", load, throughput, p99, "", "")
    for position, result in enumerate(report.ranked(), start=1):
        load, throughput, p99 = _level_cell(result)
        change = ""
        if result.best is not None and base > 0:
            change = f"{result.best.throughput / base:.2f}x"
        note = result.error or ("" if result.feasible else "misses constraints")
        table.add_row(str(position), result.candidate.label, load, throughput, p99, change, note)
    return table


def write_report(report: TuneReport, folder: Path) -> list[Path]:
    """tune.md, tune.json, and PNG plots (when matplotlib is installed) into `folder`."""
    from tritonctl.perf.errors import PerfUsageError
    from tritonctl.perf.plot import plot_bars, plot_latency_vs_throughput

    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "tune.json"]
    (folder / "tune.json").write_text(json.dumps(report_json(report), indent=2) + "\n")
    ranked = [r for r in report.ranked() if r.best is not None]
    images: list[str] = []
    try:
        labels = ["original", *(r.candidate.label for r in ranked)]
        values = [report.baseline.best.throughput if report.baseline.best else 0.0]
        values += [r.best.throughput for r in ranked if r.best is not None]
        plot_bars(
            labels,
            values,
            "best throughput (infer/s)",
            f"{report.model}: throughput per config",
            folder / "throughput.png",
        )
        curves = [("original", report.baseline)] + [(r.candidate.label, r) for r in ranked[:TOP_CURVES]]
        runs = [(name, r.report.to_json()) for name, r in curves if r.report is not None]
        plot_latency_vs_throughput(runs, folder / "latency_vs_throughput.png")
        images = ["throughput.png", "latency_vs_throughput.png"]
        written += [folder / name for name in images]
    except PerfUsageError:  # matplotlib missing: the Markdown report still says everything
        pass
    markdown = folder / "tune.md"
    markdown.write_text(_markdown(report, images))
    written.append(markdown)
    return written


def _markdown(report: TuneReport, images: list[str]) -> str:
    lines = [f"# tune report: `{report.model}`", "", f"Objective: **{report.objective}**.", ""]
    winner = report.winner
    if winner is not None and winner.best is not None:
        lines += [
            f"Winner: **{winner.candidate.label}** ({winner.best.throughput:.1f} infer/s, "
            f"p99 {winner.best.latency_us['p99'] / 1000:.2f} ms).",
            "",
        ]
    lines += ["| # | config | load | infer/s | p99 ms | note |", "|---|---|---|---|---|---|"]
    load, throughput, p99 = _level_cell(report.baseline)
    lines.append(f"| - | original (as loaded) | {load} | {throughput} | {p99} | |")
    for position, result in enumerate(report.ranked(), start=1):
        load, throughput, p99 = _level_cell(result)
        note = (result.error or ("" if result.feasible else "misses constraints")).replace("|", "/")
        lines.append(f"| {position} | {result.candidate.label} | {load} | {throughput} | {p99} | {note} |")
    lines.append("")
    lines += [f"![{name}]({name})" for name in images]
    if winner is not None and winner.config is not None:
        lines += ["", "## Winning config.pbtxt", "", "```", config_text(winner.config).rstrip(), "```"]
    lines += ["", "Original config restored: " + ("yes" if report.restored else "NO"), ""]
    return "\n".join(lines)
