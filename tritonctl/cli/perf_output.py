"""What `tritonctl perf run` shows and writes: the live progress, the table, the files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from tritonctl.perf.measure import LevelResult, Window
    from tritonctl.perf.runner import SweepReport
    from tritonctl.perf.settings import LoadLevel


class LiveProgress:
    """Rich live display of a sweep: finished levels above, the current window below."""

    def __init__(self, console: Console, total_levels: int) -> None:
        from rich.live import Live

        self._console = console
        self._total = total_levels
        self._lines: list[str] = []
        self._current = ""
        self._live = Live(console=console, transient=True, refresh_per_second=8)

    def __enter__(self) -> LiveProgress:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(None, None, None)

    def _render(self) -> None:
        from rich.text import Text

        self._live.update(Text("\n".join([*self._lines, self._current])))

    def level_started(self, level: LoadLevel, index: int, total: int) -> None:
        self._current = f"[{index + 1}/{total}] {level.label}: warming up"
        self._render()

    def window_measured(self, level: LoadLevel, trial: int, window: Window, batch_size: int) -> None:
        p99 = float(window.latencies_ns.max()) / 1000 if window.successes else 0.0
        self._current = (
            f"{level.label}: window {trial}: {window.throughput(batch_size):.1f} infer/s, "
            f"max {p99:.0f} µs, {window.errors} errors"
        )
        self._render()

    def level_finished(self, result: LevelResult) -> None:
        mark = "" if result.stable else " (unstable)"
        p99 = result.latency_us["p99"]
        self._lines.append(f"{result.level.label}: {result.throughput:.1f} infer/s, p99 {p99:.0f} µs{mark}")
        self._current = ""
        self._render()


def write_outputs(
    document: dict[str, Any], json_path: Path | None, csv_path: Path | None, plot_path: Path | None
) -> None:
    from tritonctl.perf.report import write_csv, write_json

    if json_path:
        write_json(document, json_path)
    if csv_path:
        write_csv(document, csv_path)
    if plot_path:
        from tritonctl.perf.plot import plot_latency_vs_throughput

        plot_latency_vs_throughput([(document["model"], document)], plot_path)


def print_report(console: Console, report: SweepReport) -> None:
    from tritonctl.perf.report import results_table

    console.print(results_table(report.to_json()))
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
