"""Pure parts of `tritonctl rollout`: steps, configs, the plan, gates, shadow inputs, the state file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tritonctl.client import ModelSignature, TensorSpec
from tritonctl.rollout.errors import RolloutError, RolloutUsageError
from tritonctl.rollout.gates import OutputComparison, VersionCounters, counters_by_version, judge_canary
from tritonctl.rollout.plan import (
    Gates,
    RolloutSettings,
    config_weights,
    describe_policy,
    draw_plan,
    parse_steps,
    routed_config,
)
from tritonctl.rollout.shadow import shadow_samples
from tritonctl.rollout.state import Phase, RolloutRecord, StateStore, default_state_file


def test_steps_rise_and_end_at_100() -> None:
    assert parse_steps("10,50,100") == (10, 50, 100)
    assert parse_steps("5, 25") == (5, 25, 100)
    for bad in ("", "0,50", "50,10", "10,10", "ten", "150"):
        with pytest.raises(RolloutUsageError):
            parse_steps(bad)


ORIGINAL = {
    "name": "m",
    "version_policy": {"latest": {"num_versions": 1}},
    "max_batch_size": 8,
    "parameters": {"keep": {"string_value": "me"}},
}


def test_routed_config_edits_only_policy_and_weights() -> None:
    routed = routed_config(ORIGINAL, [2, 1], {1: 90, 2: 10})
    assert routed["version_policy"] == {"specific": {"versions": [1, 2]}}
    assert routed["parameters"] == {
        "keep": {"string_value": "me"},
        "version_weights": {"string_value": "1:90,2:10"},
    }
    assert routed["max_batch_size"] == 8
    assert ORIGINAL["version_policy"] == {"latest": {"num_versions": 1}}  # the original is untouched
    assert config_weights(routed) == {1: 90, 2: 10}
    promoted = routed_config(routed, [2], None)
    assert "version_weights" not in promoted["parameters"] and config_weights(promoted) is None
    assert describe_policy(promoted) == "specific [2]"
    assert (
        describe_policy(ORIGINAL) == "latest 1" and describe_policy({"version_policy": {"all": {}}}) == "all"
    )


def index(*entries: tuple[str, str, str]) -> list[dict[str, str]]:
    return [{"name": n, "version": v, "state": s, "reason": ""} for n, v, s in entries]


def test_plan_starts_from_the_one_serving_version() -> None:
    settings = RolloutSettings(to_version=2)
    plan = draw_plan("m", settings, index(("m", "1", "READY"), ("other", "1", "READY")), ORIGINAL)
    assert (plan.from_version, plan.to_version) == (1, 2)
    assert plan.target_known == "not loaded before; the load checks its folder"
    assert "load version 2 beside 1: policy specific [1, 2], weights 1:100" in plan.describe()[0]
    failed_before = index(("m", "1", "READY"), ("m", "2", "UNAVAILABLE"))
    assert (
        "the index lists it as UNAVAILABLE" in draw_plan("m", settings, failed_before, ORIGINAL).target_known
    )
    # Two READY versions, but the weights say which one serves.
    weighted = routed_config(ORIGINAL, [1, 3], {3: 100})
    assert (
        draw_plan("m", settings, index(("m", "1", "READY"), ("m", "3", "READY")), weighted).from_version == 3
    )


@pytest.mark.parametrize(
    ("entries", "to_version", "message"),
    [
        ((), 2, "not in the server's repository index"),
        ((("m", "", ""),), 2, "has no READY version"),
        ((("m", "1", "READY"), ("m", "2", "READY")), 3, "serves versions 1, 2 at once"),
        ((("m", "1", "READY"),), 1, "already serves all traffic"),
    ],
)
def test_plan_refuses_states_it_cannot_start_from(
    entries: tuple[tuple[str, str, str], ...], to_version: int, message: str
) -> None:
    with pytest.raises(RolloutError, match=message):
        draw_plan("m", RolloutSettings(to_version=to_version), index(*entries), ORIGINAL)


def test_counters_read_http_numbers_and_grpc_strings_with_zeros_left_out() -> None:
    statistics = [
        {
            "version": "1",
            "inference_stats": {"success": {"count": 10, "ns": 20_000_000}, "fail": {"count": 0}},
        },
        {"version": "2", "inference_stats": {"success": {"count": "4", "ns": "4000000"}}},  # gRPC JSON
        {"version": "3", "inference_stats": {}},
    ]
    counters = counters_by_version(statistics)
    assert counters[1] == VersionCounters(10, 0, 20_000_000) and counters[1].mean_ms == 2.0
    assert counters[2] == VersionCounters(4, 0, 4_000_000)
    assert counters[3] == VersionCounters() and counters[3].mean_ms is None
    assert VersionCounters(12, 3, 30).since(VersionCounters(10, 1, 10)) == VersionCounters(2, 2, 20)


def test_canary_gate_errors_at_once_latency_only_at_the_end_with_enough_samples() -> None:
    gates = Gates(max_error_rate=0.1, max_p99_ratio=2.0)
    fast_old = VersionCounters(success=100, success_ns=100 * 1_000_000)  # 1 ms each
    erring = VersionCounters(success=8, fail=2)
    verdict = judge_canary(erring, fast_old, gates, final=False)
    assert not verdict.passed and "2 of 10 requests to the new version failed" in verdict.reason
    assert judge_canary(VersionCounters(success=99, fail=1), fast_old, gates, final=False).passed  # 1% < 10%
    slow = VersionCounters(success=20, success_ns=20 * 3_000_000)  # 3 ms each
    assert judge_canary(slow, fast_old, gates, final=False).passed  # judged when the hold ends
    ending = judge_canary(slow, fast_old, gates, final=True)
    assert not ending.passed and ending.latency_ratio == pytest.approx(3.0)
    few = VersionCounters(success=3, success_ns=3 * 9_000_000)
    assert judge_canary(few, fast_old, gates, final=True).passed  # too few samples to judge latency
    assert judge_canary(VersionCounters(), fast_old, gates, final=True).passed  # no traffic, no verdict


def test_output_comparison_tolerances_shapes_and_bytes() -> None:
    gates = Gates(atol=1e-3, rtol=0.0)
    numeric = OutputComparison("OUT")
    numeric.add(np.zeros(4, np.float32), np.full(4, 5e-4, np.float32), gates)
    numeric.add(np.zeros(4, np.float32), np.full(4, 2e-3, np.float32), gates)
    numeric.add(np.zeros(4, np.float32), np.zeros(5, np.float32), gates)  # shape differs
    numeric.add(np.zeros(4, np.float32), None, gates)  # output missing
    assert (numeric.compared, numeric.mismatched) == (4, 3)
    assert numeric.max_abs_diff == pytest.approx(2e-3)
    text = OutputComparison("TEXT")
    text.add(np.array([b"a"], dtype=object), np.array([b"a"], dtype=object), gates)
    text.add(np.array([b"a"], dtype=object), np.array([b"b"], dtype=object), gates)
    assert (text.mismatched, text.max_abs_diff) == (1, None)


SIGNATURE = ModelSignature(
    "m", ["1"], "python", [TensorSpec("A", "FP32", [-1, 4]), TensorSpec("B", "INT32", [-1, -1])], []
)


def test_random_shadow_inputs_are_seeded_and_fill_variable_dims() -> None:
    first = shadow_samples(SIGNATURE, batched=True, inputs_file=None, seed=7, count=3)
    again = shadow_samples(SIGNATURE, batched=True, inputs_file=None, seed=7, count=3)
    assert len(first) == 3
    assert first[0]["A"][1].shape == (1, 4) and first[0]["B"][1].shape == (1, 4)
    assert first[0]["A"][0] == "FP32" and first[0]["B"][1].dtype == np.int32
    assert all(np.array_equal(a["A"][1], b["A"][1]) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0]["A"][1], first[1]["A"][1])


def test_shadow_inputs_from_a_perf_analyzer_json_file(tmp_path: Path) -> None:
    path = tmp_path / "inputs.json"
    path.write_text(json.dumps({"data": [{"A": [1, 2, 3, 4], "B": {"content": [1, 2], "shape": [2]}}]}))
    (sample,) = shadow_samples(SIGNATURE, batched=True, inputs_file=path, seed=0, count=5)
    assert sample["A"][1].tolist() == [[1.0, 2.0, 3.0, 4.0]] and sample["B"][1].tolist() == [[1, 2]]
    path.write_text(json.dumps({"data": [{"A": [1, 2, 3, 4]}]}))
    with pytest.raises(RolloutUsageError, match=r"--inputs .*lacks inputs \['B'\]"):
        shadow_samples(SIGNATURE, batched=True, inputs_file=path, seed=0, count=5)


def test_state_file_keeps_records_across_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITONCTL_ROLLOUT_STATE", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_file() == tmp_path / "xdg" / "tritonctl" / "rollouts.json"
    monkeypatch.setenv("TRITONCTL_ROLLOUT_STATE", str(tmp_path / "moved.json"))
    assert default_state_file() == tmp_path / "moved.json"

    store = StateStore(tmp_path / "deep" / "rollouts.json")
    assert store.latest("m") is None
    record = RolloutRecord("m", "127.0.0.1:8001", "grpc", 1, 2, ORIGINAL)
    record.note("planned")
    store.save(record)
    record.phase = Phase.CANARY
    store.save(record)  # replaces, does not append
    loaded = StateStore(store.path).latest("m")
    assert loaded is not None and loaded.phase is Phase.CANARY and loaded.original_config == ORIGINAL
    assert len(store.history("m")) == 1
    assert loaded.owner_alive()  # this very process, mid-rollout
    loaded.pid = _dead_pid()
    assert not loaded.owner_alive()
    loaded.phase = Phase.DONE
    assert not loaded.owner_alive()  # finished rollouts own nothing
    for _ in range(25):
        store.save(RolloutRecord("m", "", "grpc", 1, 2, {}))
    assert len(store.history("m")) == 20
    store.path.write_text("{not json")
    with pytest.raises(RolloutError, match="cannot read the rollout state file"):
        store.latest("m")


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid
