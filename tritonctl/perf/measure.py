"""Measurement windows, percentiles, stability and the server-side breakdown (pure numpy, no I/O).

Follows perf_analyzer's method: a level is measured in consecutive windows; it is stable once the
last three windows agree on throughput and latency within `--stability-percentage` of their mean;
the reported numbers merge those three windows (all their latencies, their total duration).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tritonctl.perf.control import StatsSnapshot
from tritonctl.perf.settings import STABILITY_WINDOWS, LoadLevel

PERCENTILES = (50, 90, 95, 99)
SERVER_FIELDS = ("queue", "compute_input", "compute_infer", "compute_output")


@dataclass(frozen=True)
class Window:
    """The requests that completed in [start_ns, end_ns) at one level."""

    start_ns: int
    end_ns: int
    latencies_ns: npt.NDArray[np.int64]  # successful requests only
    errors: int
    server: StatsSnapshot | None  # statistics delta over the window, None without a stats endpoint

    @property
    def duration_s(self) -> float:
        return max(self.end_ns - self.start_ns, 1) / 1e9

    @property
    def successes(self) -> int:
        return int(self.latencies_ns.size)

    def throughput(self, batch_size: int) -> float:
        return self.successes * batch_size / self.duration_s


def latency_summary_us(latencies_ns: npt.NDArray[np.int64]) -> dict[str, float]:
    """avg and nearest-rank p50/p90/p95/p99 in microseconds (monotone by construction)."""
    if latencies_ns.size == 0:
        return {"avg": 0.0, **{f"p{p}": 0.0 for p in PERCENTILES}}
    ordered = np.sort(latencies_ns)
    summary = {"avg": float(ordered.mean()) / 1000.0}
    for p in PERCENTILES:
        rank = max(math.ceil(p / 100.0 * ordered.size), 1)
        summary[f"p{p}"] = float(ordered[rank - 1]) / 1000.0
    return summary


def _stability_metric(window: Window, percentile: int | None) -> float:
    if window.successes == 0:
        return 0.0
    if percentile is None:
        return float(window.latencies_ns.mean())
    return float(np.percentile(window.latencies_ns, percentile))


def is_stable(
    windows: list[Window], batch_size: int, percentage: float, percentile: int | None = None
) -> bool:
    """True when the last STABILITY_WINDOWS windows agree within `percentage` of their mean."""
    if len(windows) < STABILITY_WINDOWS:
        return False
    recent = windows[-STABILITY_WINDOWS:]
    if any(window.successes == 0 for window in recent):
        return False
    for values in (
        [window.throughput(batch_size) for window in recent],
        [_stability_metric(window, percentile) for window in recent],
    ):
        mean = sum(values) / len(values)
        if mean <= 0 or any(abs(value - mean) > mean * percentage / 100.0 for value in values):
            return False
    return True


@dataclass(frozen=True)
class LevelResult:
    """What one load level measured: the JSON `results` entry plus how it was obtained."""

    level: LoadLevel
    throughput: float  # inferences per second (requests x batch size)
    latency_us: dict[str, float]
    errors: int
    server_us: dict[str, float] | None
    stable: bool
    windows: int  # windows measured at this level (trials)
    requests: int  # successful requests in the merged windows

    def to_json(self) -> dict[str, Any]:
        key = "concurrency" if self.level.mode == "concurrency" else "request_rate"
        value: float | int = int(self.level.value) if self.level.mode == "concurrency" else self.level.value
        return {
            key: value,
            "throughput": round(self.throughput, 3),
            "latency_us": {name: round(v, 1) for name, v in self.latency_us.items()},
            "errors": self.errors,
            "server_us": None
            if self.server_us is None
            else {k: round(v, 1) for k, v in self.server_us.items()},
        }


def server_breakdown_us(delta: StatsSnapshot | None) -> dict[str, float] | None:
    """Average per-request queue and compute times from a statistics delta (None: no data)."""
    if delta is None or delta.durations["success"][0] <= 0:
        return None
    return {name: delta.average_us(name) for name in SERVER_FIELDS}


def merge_windows(
    level: LoadLevel, windows: list[Window], batch_size: int, stable: bool, server_delta: StatsSnapshot | None
) -> LevelResult:
    """Merge the last STABILITY_WINDOWS windows (fewer if fewer were measured) into one result."""
    recent = windows[-STABILITY_WINDOWS:]
    latencies = np.concatenate([window.latencies_ns for window in recent])
    duration = sum(window.duration_s for window in recent)
    return LevelResult(
        level=level,
        throughput=latencies.size * batch_size / duration if duration > 0 else 0.0,
        latency_us=latency_summary_us(latencies),
        errors=sum(window.errors for window in recent),
        server_us=server_breakdown_us(server_delta),
        stable=stable,
        windows=len(windows),
        requests=int(latencies.size),
    )
