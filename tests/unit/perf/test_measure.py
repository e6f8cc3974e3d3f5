"""Windows, percentiles, stability and the server-side breakdown."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from tritonctl.perf.control import STAT_FIELDS, StatsSnapshot
from tritonctl.perf.measure import Window, is_stable, latency_summary_us, merge_windows, server_breakdown_us
from tritonctl.perf.settings import LoadLevel


@given(st.lists(st.integers(min_value=1, max_value=10**10), min_size=1, max_size=300))
def test_percentiles_are_monotone_and_bounded(values: list[int]) -> None:
    summary = latency_summary_us(np.array(values, dtype=np.int64))
    ordered = [summary[key] for key in ("p50", "p90", "p95", "p99")]
    assert ordered == sorted(ordered)
    assert min(values) / 1000 <= summary["p50"] and summary["p99"] <= max(values) / 1000


def test_nearest_rank_percentiles() -> None:
    summary = latency_summary_us(np.arange(1, 101, dtype=np.int64) * 1000)
    assert (summary["p50"], summary["p90"], summary["p99"], summary["avg"]) == (50, 90, 99, 50.5)
    assert latency_summary_us(np.array([], dtype=np.int64))["p99"] == 0.0


def _window(count: int, latency_us: int, errors: int = 0, start: int = 0) -> Window:
    return Window(
        start, start + 1_000_000_000, np.full(count, latency_us * 1000, dtype=np.int64), errors, None
    )


def test_stability_needs_three_agreeing_windows() -> None:
    steady = [_window(1000, 500), _window(1040, 510), _window(980, 495)]
    assert not is_stable(steady[:2], 1, 10)
    assert is_stable(steady, 1, 10)
    assert not is_stable([*steady[:2], _window(1300, 500)], 1, 10)  # throughput moved 30%
    assert not is_stable([*steady[:2], _window(1000, 800)], 1, 10)  # latency moved
    assert not is_stable([*steady[:2], _window(0, 0, errors=5)], 1, 10)


def _snapshot(scale: int) -> StatsSnapshot:
    durations = dict.fromkeys(STAT_FIELDS, (0, 0))
    durations.update(
        success=(10 * scale, 0),
        queue=(10 * scale, 20_000 * scale),
        compute_input=(10 * scale, 5_000 * scale),
        compute_infer=(10 * scale, 100_000 * scale),
        compute_output=(10 * scale, 7_000 * scale),
    )
    return StatsSnapshot(durations, 10 * scale, 10 * scale)


def test_server_breakdown_from_deltas() -> None:
    delta = _snapshot(3).minus(_snapshot(1))
    assert server_breakdown_us(delta) == {
        "queue": 2.0,
        "compute_input": 0.5,
        "compute_infer": 10.0,
        "compute_output": 0.7,
    }
    assert server_breakdown_us(None) is None
    assert server_breakdown_us(_snapshot(1).minus(_snapshot(1))) is None  # nothing completed


def test_merge_uses_the_last_three_windows_and_batch_size() -> None:
    windows = [_window(10, 9000), _window(100, 100), _window(100, 200), _window(100, 300, errors=2)]
    result = merge_windows(LoadLevel("concurrency", 2), windows, 4, True, _snapshot(2).minus(_snapshot(1)))
    assert result.requests == 300 and result.windows == 4
    assert result.throughput == 400.0  # 300 requests x batch 4 over 3 s
    assert result.latency_us["avg"] == 200.0 and result.errors == 2
    document = result.to_json()
    assert set(document) == {"concurrency", "throughput", "latency_us", "errors", "server_us"}
    assert document["concurrency"] == 2 and set(document["server_us"]) == {
        "queue",
        "compute_input",
        "compute_infer",
        "compute_output",
    }
