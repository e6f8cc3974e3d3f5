"""tune without a server: candidate configs, search moves, scoring and ranking."""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tritonctl.perf.errors import PerfUsageError
from tritonctl.perf.measure import LevelResult
from tritonctl.perf.runner import SweepReport
from tritonctl.perf.settings import LoadLevel
from tritonctl.perf.tune import (
    DYNAMIC_BATCHING_OFF,
    Candidate,
    CandidateResult,
    Constraints,
    SearchSpace,
    brute_force,
    evaluate,
    hill_climb,
    rank,
)

ORIGINAL = text_format.Parse(
    """
    name: "m" max_batch_size: 8
    instance_group [ { count: 1 kind: KIND_CPU } ]
    dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 100 }
    """,
    model_config_pb2.ModelConfig(),
)


def test_candidate_applies_its_settings_only() -> None:
    config = Candidate(instances=3, max_batch_size=4, max_queue_delay_us=500).apply(ORIGINAL)
    assert config.instance_group[0].count == 3 and config.max_batch_size == 4
    assert list(config.dynamic_batching.preferred_batch_size) == [4]  # 8 > max_batch_size dropped
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert ORIGINAL.instance_group[0].count == 1  # the original is untouched
    assert not Candidate(max_queue_delay_us=DYNAMIC_BATCHING_OFF).apply(ORIGINAL).HasField("dynamic_batching")
    assert Candidate().apply(ORIGINAL) == ORIGINAL
    with pytest.raises(PerfUsageError, match="needs max_batch_size > 0"):
        Candidate(max_batch_size=0).apply(ORIGINAL)


def test_candidate_labels() -> None:
    assert Candidate(2, 16, 0).label == "instances=2 max_batch=16 delay=0us"
    assert Candidate(max_queue_delay_us=DYNAMIC_BATCHING_OFF).label == "dynamic_batching=off"


def test_grid_neighbors_and_start() -> None:
    space = SearchSpace((1, 2, 4), (8, 16), ())
    assert len(space.grid()) == 6
    assert set(space.neighbors(Candidate(2, 8, None))) == {
        Candidate(1, 8, None),
        Candidate(4, 8, None),
        Candidate(2, 16, None),
    }
    assert space.start_near(ORIGINAL) == Candidate(1, 8, None)
    assert SearchSpace().is_empty and not space.is_empty


def _result(
    candidate: Candidate, throughput: float, p99_us: float = 1000.0, errors: int = 0
) -> CandidateResult:
    level = LevelResult(
        LoadLevel("concurrency", 8),
        throughput,
        {"avg": p99_us / 2, "p50": p99_us / 2, "p90": p99_us, "p95": p99_us, "p99": p99_us},
        errors,
        None,
        True,
        3,
        100,
    )
    report = SweepReport("m", "grpc", "h:1", 1, results=[level])
    return CandidateResult(candidate, None, report=report)


def test_constraints_decide_feasibility_and_ranking() -> None:
    fast_but_slow_tail = _result(Candidate(1), 900.0, p99_us=9000)
    steady = _result(Candidate(2), 500.0, p99_us=2000)
    failing = _result(Candidate(4), 2000.0, errors=3)
    constraints = Constraints("throughput", latency_budget_ms=5.0)
    for result in (fast_but_slow_tail, steady, failing):
        evaluate(result, constraints)
    assert steady.feasible and not fast_but_slow_tail.feasible and not failing.feasible
    assert rank([fast_but_slow_tail, failing, steady], "throughput")[0] is steady
    latency = Constraints("latency", min_throughput=600.0)
    for result in (fast_but_slow_tail, steady):
        evaluate(result, latency)
    assert fast_but_slow_tail.feasible and not steady.feasible


def _scored_visit(scores: dict[Candidate, float], visited: list[Candidate]):  # type: ignore[no-untyped-def]
    def visit(candidate: Candidate) -> CandidateResult:
        visited.append(candidate)
        result = _result(candidate, scores[candidate])
        evaluate(result, Constraints())
        return result

    return visit


def test_hill_climb_follows_the_slope_and_stops() -> None:
    space = SearchSpace((1, 2, 4, 8), (), ())
    scores = {Candidate(n, None, None): s for n, s in ((1, 100.0), (2, 180.0), (4, 220.0), (8, 150.0))}
    visited: list[Candidate] = []
    hill_climb(space, Candidate(1, None, None), _scored_visit(scores, visited), "throughput")
    assert Candidate(4, None, None) in visited
    # It stopped at the peak: 8 was only looked at as a neighbour of 4, never moved to and past.
    assert visited.count(Candidate(8, None, None)) == 1


def test_brute_force_visits_every_point() -> None:
    space = SearchSpace((1, 2), (8, 16), (0, DYNAMIC_BATCHING_OFF))
    visited: list[Candidate] = []
    brute_force(space, _scored_visit(dict.fromkeys(space.grid(), 1.0), visited))
    assert len(visited) == 8 == len(set(visited))
