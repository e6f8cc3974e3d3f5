"""PNG plots of perf and tune results (matplotlib, imported only here: `pip install tritonctl[plot]`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tritonctl.perf.errors import PerfUsageError

PERCENTILE_STYLES = (("p50", "o"), ("p90", "s"), ("p95", "^"), ("p99", "D"))
RUN_LINESTYLES = ("-", "--", ":", "-.")


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise PerfUsageError("plots need matplotlib: pip install 'tritonctl[plot]'") from None
    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def plot_latency_vs_throughput(runs: list[tuple[str, dict[str, Any]]], path: Path) -> None:
    """Latency percentiles (ms) against throughput, one line style per run."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 5))
    try:
        for run_index, (name, document) in enumerate(runs):
            results = document["results"]
            throughput = [result["throughput"] for result in results]
            linestyle = RUN_LINESTYLES[run_index % len(RUN_LINESTYLES)]
            for key, marker in PERCENTILE_STYLES:
                latency_ms = [result["latency_us"][key] / 1000.0 for result in results]
                label = f"{name} {key}" if len(runs) > 1 else key
                axes.plot(throughput, latency_ms, linestyle=linestyle, marker=marker, label=label)
        axes.set_xlabel("throughput (inferences/s)")
        axes.set_ylabel("latency (ms)")
        model = runs[0][1].get("model", "") if runs else ""
        axes.set_title(f"{model}: latency vs throughput")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="small")
        figure.tight_layout()
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)


def plot_bars(labels: list[str], values: list[float], ylabel: str, title: str, path: Path) -> None:
    """A bar chart (tune: best throughput per candidate config)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(max(6, 0.6 * len(labels) + 2), 5))
    try:
        axes.bar(range(len(values)), values, color="#4c72b0")
        axes.set_xticks(range(len(labels)))
        axes.set_xticklabels(labels, rotation=45, ha="right", fontsize="small")
        axes.set_ylabel(ylabel)
        axes.set_title(title)
        axes.grid(True, axis="y", alpha=0.3)
        figure.tight_layout()
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)
