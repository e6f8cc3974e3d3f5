"""The gates a candidate version must pass: equal outputs, comparable latency, few errors.

Shadow gates compare answers and client-side latency percentiles of the same requests sent to
both versions. Canary gates read the server's statistics extension (cumulative per-version
counters): the difference of two readings is what happened in between. The statistics carry
counts and total durations but no percentiles, so the canary's latency gate compares mean
request durations; the shadow check is where p99 is measured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tritonctl.rollout.plan import Gates

# Below this many successful requests in a window, a mean latency says too little to judge.
MIN_LATENCY_SAMPLES = 10


@dataclass(frozen=True)
class VersionCounters:
    """Cumulative request counters of one version, as the statistics extension reports them."""

    success: int = 0
    fail: int = 0
    success_ns: int = 0

    def since(self, earlier: VersionCounters) -> VersionCounters:
        return VersionCounters(
            self.success - earlier.success, self.fail - earlier.fail, self.success_ns - earlier.success_ns
        )

    @property
    def requests(self) -> int:
        return self.success + self.fail

    @property
    def error_rate(self) -> float:
        return self.fail / self.requests if self.requests else 0.0

    @property
    def mean_ms(self) -> float | None:
        return self.success_ns / self.success / 1e6 if self.success else None


def _count(stat: Mapping[str, Any] | None, key: str) -> int:
    # gRPC's JSON leaves zero fields out and writes int64 as strings; HTTP writes numbers.
    return int((stat or {}).get(key, 0) or 0)


def counters_by_version(statistics: Sequence[Mapping[str, Any]]) -> dict[int, VersionCounters]:
    """version -> counters, from the `model_stats` entries of one model."""
    result: dict[int, VersionCounters] = {}
    for entry in statistics:
        version = str(entry.get("version", ""))
        if not version.isdigit():
            continue
        stats = entry.get("inference_stats") or {}
        success, fail = stats.get("success"), stats.get("fail")
        result[int(version)] = VersionCounters(
            _count(success, "count"), _count(fail, "count"), _count(success, "ns")
        )
    return result


@dataclass(frozen=True)
class CanaryVerdict:
    passed: bool
    reason: str
    candidate: VersionCounters  # what the candidate did in the window
    latency_ratio: float | None  # candidate mean / current mean, when both said enough


def judge_canary(
    candidate: VersionCounters, baseline: VersionCounters, gates: Gates, *, final: bool
) -> CanaryVerdict:
    """Judge a canary window: errors at any time, latency once the window is over (`final`).

    `candidate`: the new version's counters over this step; `baseline`: the current version's
    over the whole canary so far (it may get no traffic in the last step).
    """
    if candidate.fail and candidate.error_rate > gates.max_error_rate:
        reason = (
            f"{candidate.fail} of {candidate.requests} requests to the new version failed "
            f"(error rate {candidate.error_rate:.3f} > {gates.max_error_rate:g})"
        )
        return CanaryVerdict(False, reason, candidate, None)
    ratio = None
    new_ms, old_ms = candidate.mean_ms, baseline.mean_ms
    enough = candidate.success >= MIN_LATENCY_SAMPLES and baseline.success >= MIN_LATENCY_SAMPLES
    if enough and new_ms is not None and old_ms:
        ratio = new_ms / old_ms
    if final and ratio is not None and ratio > gates.max_p99_ratio:
        reason = (
            f"the new version's mean request time {new_ms:.2f} ms is {ratio:.2f}x the current one's "
            f"{old_ms:.2f} ms (> {gates.max_p99_ratio:g})"
        )
        return CanaryVerdict(False, reason, candidate, ratio)
    return CanaryVerdict(True, "", candidate, ratio)


@dataclass
class OutputComparison:
    """How one output of the candidate compared with the current version's over a shadow run."""

    name: str
    compared: int = 0
    mismatched: int = 0
    max_abs_diff: float | None = None  # numeric outputs only

    def add(self, old: npt.NDArray[Any] | None, new: npt.NDArray[Any] | None, gates: Gates) -> None:
        self.compared += 1
        if old is None or new is None or old.shape != new.shape:
            self.mismatched += 1
            return
        if old.dtype.kind in "fciu" and new.dtype.kind in "fciu":
            diff = float(np.max(np.abs(new.astype(np.float64) - old.astype(np.float64)), initial=0.0))
            self.max_abs_diff = diff if self.max_abs_diff is None else max(self.max_abs_diff, diff)
            close = np.allclose(new, old, atol=gates.atol, rtol=gates.rtol, equal_nan=True)
        else:  # BYTES, BOOL: exact
            close = bool(np.array_equal(new, old))
        if not close:
            self.mismatched += 1


def percentile_ms(latencies_s: Sequence[float], percent: float) -> float | None:
    if not latencies_s:
        return None
    return float(np.percentile(np.asarray(latencies_s) * 1000.0, percent))
