"""The rollout state machine's transitions, driven against a small in-memory stand-in of a server.

The stand-in keeps only what the machine reads (index, config, readiness, statistics) and
simulates unversioned traffic split by the weights of its last load while the machine holds a
step. The real server under the same machine is covered by tests/integration/rollout.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from server.errors import BackendError, LoadError, ServerError, Unavailable
from tritonctl.client import InferAnswer, ModelSignature, OutputTensor, TensorSpec
from tritonctl.rollout.errors import RolloutUsageError
from tritonctl.rollout.machine import Observer, RolloutMachine, rollback
from tritonctl.rollout.plan import Gates, RolloutSettings, config_weights
from tritonctl.rollout.state import Phase, StateStore

ORIGINAL = {"name": "m", "max_batch_size": 8, "version_policy": {"specific": {"versions": [1]}}}


@dataclass
class FakeServer:
    """Versions are functions of the input; `broken` versions fail to load, `erring` fail requests."""

    offsets: dict[int, float] = field(default_factory=lambda: {1: 0.0, 2: 0.0})
    broken: set[int] = field(default_factory=set)
    erring: set[int] = field(default_factory=set)
    slow: set[int] = field(default_factory=set)
    config: dict[str, Any] = field(default_factory=lambda: json.loads(json.dumps(ORIGINAL)))
    ready: set[int] = field(default_factory=lambda: {1})
    counters: dict[int, list[int]] = field(default_factory=dict)  # success, fail, ns
    loads: list[dict[str, Any]] = field(default_factory=list)
    refuse_loads_after: int | None = None

    def repository_index(self, ready_only: bool = False) -> list[dict[str, str]]:
        versions = sorted(set(self.offsets) | self.ready)
        return [
            {
                "name": "m",
                "version": str(v),
                "state": "READY" if v in self.ready else "UNAVAILABLE",
                "reason": "",
            }
            for v in versions
        ]

    def model_config(self, model: str, version: str = "") -> dict[str, Any]:
        return json.loads(json.dumps(self.config))

    def model_ready(self, model: str, version: str = "") -> bool:
        return int(version) in self.ready

    def signature(self, model: str, version: str = "") -> ModelSignature:
        return ModelSignature(
            "m", [str(v) for v in self.ready], "python", [TensorSpec("X", "FP32", [-1, 4])], []
        )

    def load_model(self, model: str, config_json: str | None = None) -> None:
        if self.refuse_loads_after is not None and len(self.loads) >= self.refuse_loads_after:
            raise ServerError("the server went away")
        config = json.loads(config_json or "{}")
        self.loads.append(config)
        wanted = set(config["version_policy"]["specific"]["versions"])
        broken = wanted & self.broken
        self.ready = wanted - broken
        self.config = config
        if broken:
            raise LoadError(f"version {min(broken)} failed to load")

    def model_statistics(self, model: str = "", version: str = "") -> list[dict[str, Any]]:
        return [
            {
                "version": str(v),
                "inference_stats": {"success": {"count": c[0], "ns": c[2]}, "fail": {"count": c[1]}},
            }
            for v, c in self.counters.items()
            if v in self.ready
        ]

    def infer(
        self,
        model: str,
        inputs: dict[str, tuple[str, npt.NDArray[Any]]],
        outputs: list[str] | None = None,
        version: str = "",
    ) -> InferAnswer:
        number = int(version)
        if number in self.erring:
            raise BackendError(f"version {number} failed")
        data = inputs["X"][1] + np.float32(self.offsets[number])
        return InferAnswer("m", version, [OutputTensor("Y", "FP32", list(data.shape), data)])

    def traffic(self, requests: int) -> None:
        """`requests` unversioned requests split by the current weights (as the server would)."""
        weights = config_weights(self.config) or {max(self.ready): 1}
        total = sum(w for v, w in weights.items() if v in self.ready)
        for version, weight in weights.items():
            if version not in self.ready or not weight:
                continue
            count = requests * weight // total
            entry = self.counters.setdefault(version, [0, 0, 0])
            if version in self.erring:
                entry[1] += count
            else:
                entry[0] += count
                entry[2] += count * (5_000_000 if version in self.slow else 1_000_000)


class Recorder(Observer):
    def __init__(self) -> None:
        self.phases: list[Phase] = []
        self.steps: list[int] = []

    def phase(self, phase: Phase, message: str) -> None:
        self.phases.append(phase)

    def canary_step(self, percent: int, verdict: Any, baseline: Any) -> None:
        self.steps.append(percent)


def machine(
    server: FakeServer, tmp_path: Path, to_version: int = 2, **gates: Any
) -> tuple[RolloutMachine, Recorder]:
    settings = RolloutSettings(
        to_version=to_version,
        steps=(10, 50, 100),
        hold_secs=1.0,
        gates=Gates(**gates),
        shadow_requests=4,
        poll_secs=0.5,
    )
    recorder = Recorder()
    clock = [0.0]
    ticks = itertools.count(step=0.001)

    def sleep(seconds: float) -> None:  # every poll, 100 unversioned requests arrive
        clock[0] += seconds
        server.traffic(100)

    built = RolloutMachine(
        server,  # type: ignore[arg-type]  # structurally a RolloutServer
        "m",
        settings,
        StateStore(tmp_path / "state.json"),
        server_url="fake:8001",
        observer=recorder,
        sleep=sleep,
        clock=lambda: clock[0],
        latency_clock=lambda: next(ticks),  # every shadow request takes 1 ms on both versions
    )
    return built, recorder


def test_good_version_is_promoted_through_every_step(tmp_path: Path) -> None:
    server = FakeServer()
    rollout, seen = machine(server, tmp_path)
    outcome = rollout.run(rollout.plan())
    assert outcome.promoted and outcome.shadow is not None and outcome.shadow.passed
    assert seen.phases == [
        Phase.PLANNED,
        Phase.LOADING,
        Phase.SHADOW,
        *[Phase.CANARY] * 3,
        Phase.PROMOTING,
        Phase.DONE,
    ]
    assert seen.steps == [10, 50, 100]
    weights = [config_weights(config) for config in server.loads]
    assert weights == [{1: 100}, {1: 90, 2: 10}, {1: 50, 2: 50}, {1: 0, 2: 100}, None]
    assert server.ready == {2} and server.config["version_policy"] == {"specific": {"versions": [2]}}
    assert server.counters[2][0] > 0
    saved = StateStore(tmp_path / "state.json").latest("m")
    assert saved is not None and saved.phase is Phase.DONE and saved.original_config == ORIGINAL


@pytest.mark.parametrize(
    ("server", "gates", "reason"),
    [
        (FakeServer(offsets={1: 0.0, 2: 0.5}), {}, "shadow check failed: output Y differs in 4 of 4"),
        (FakeServer(broken={2}), {}, "version 2 did not load: version 2 failed to load"),
        (FakeServer(erring={2}), {}, "the new version (2) failed shadow request 1"),
        (FakeServer(slow={2}), {"max_p99_ratio": 2.0}, "mean request time 5.00 ms is 5.00x"),
    ],
    ids=["outputs-differ", "fails-to-load", "raises-in-execute", "slow-canary"],
)
def test_failures_roll_back_to_the_original_config(
    tmp_path: Path, server: FakeServer, gates: dict[str, Any], reason: str
) -> None:
    rollout, seen = machine(server, tmp_path, **gates)
    outcome = rollout.run(rollout.plan())
    assert not outcome.promoted and not outcome.interrupted
    assert outcome.record.phase is Phase.ROLLED_BACK and reason in outcome.record.reason
    assert seen.phases[-2:] == [Phase.ROLLING_BACK, Phase.ROLLED_BACK]
    assert server.loads[-1] == ORIGINAL and server.ready == {1}


def test_canary_errors_end_the_step_at_once(tmp_path: Path) -> None:
    server = FakeServer()
    rollout, seen = machine(server, tmp_path, max_error_rate=0.05)
    plan = rollout.plan()
    original_load = server.load_model

    def load_then_fail(model: str, config_json: str | None = None) -> None:
        original_load(model, config_json)
        if (config_weights(server.config) or {}).get(2):  # the canary begins: v2 now errs
            server.erring.add(2)

    server.load_model = load_then_fail  # type: ignore[method-assign]
    outcome = rollout.run(plan)
    assert "canary gate failed: 10 of 10 requests to the new version failed" in outcome.record.reason
    assert seen.steps == []  # the first step never completed
    assert server.ready == {1}


def test_ctrl_c_during_a_hold_rolls_back_and_says_so(tmp_path: Path) -> None:
    server = FakeServer()
    rollout, _ = machine(server, tmp_path)

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    rollout._sleep = interrupted
    outcome = rollout.run(rollout.plan())
    assert outcome.interrupted and outcome.record.phase is Phase.ROLLED_BACK
    assert outcome.record.reason == "interrupted (Ctrl-C)"
    assert server.loads[-1] == ORIGINAL and server.ready == {1}


def test_a_failing_rollback_is_reported_and_rollback_command_retries(tmp_path: Path) -> None:
    server = FakeServer(offsets={1: 0.0, 2: 1.0}, refuse_loads_after=1)  # only the first load works
    rollout, _ = machine(server, tmp_path)
    outcome = rollout.run(rollout.plan())
    assert outcome.record.phase is Phase.ROLLBACK_FAILED
    assert "the rollback failed too: the server went away" in outcome.record.reason
    assert server.ready == {1, 2}  # left beside each other
    server.refuse_loads_after = None
    store = StateStore(tmp_path / "state.json")
    record = rollback(server, store, "m")  # type: ignore[arg-type]
    assert record.phase is Phase.ROLLED_BACK and server.ready == {1}


def test_plan_refuses_while_another_rollout_of_the_model_runs(tmp_path: Path) -> None:
    server = FakeServer()
    rollout, _ = machine(server, tmp_path)
    store = StateStore(tmp_path / "state.json")
    from tritonctl.rollout.state import RolloutRecord

    running = RolloutRecord("m", "fake:8001", "grpc", 1, 2, ORIGINAL, phase=Phase.CANARY)  # pid: this process
    store.save(running)
    with pytest.raises(ServerError, match="already running"):
        rollout.plan()
    with pytest.raises(ServerError, match="still running"):
        rollback(server, store, "m")  # type: ignore[arg-type]
    assert rollback(server, store, "m", force=True).phase is Phase.ROLLED_BACK  # type: ignore[arg-type]


def test_a_server_that_refuses_loads_is_left_alone(tmp_path: Path) -> None:
    server = FakeServer()

    def refuse(model: str, config_json: str | None = None) -> None:
        raise Unavailable("explicit model load / unload is not allowed if polling is enabled")

    server.load_model = refuse  # type: ignore[method-assign]
    rollout, seen = machine(server, tmp_path)
    outcome = rollout.run(rollout.plan())
    assert not outcome.changed and outcome.record.phase is Phase.ROLLED_BACK
    assert "start it with --model-control-mode=explicit" in outcome.record.reason
    assert Phase.ROLLING_BACK not in seen.phases and server.ready == {1}


def test_a_bad_inputs_file_stops_the_plan_before_any_change(tmp_path: Path) -> None:
    server = FakeServer()
    rollout, _ = machine(server, tmp_path)
    bad = tmp_path / "inputs.json"
    bad.write_text('{"data": [{"WRONG": [1, 2, 3, 4]}]}')
    rollout.settings = dataclasses.replace(rollout.settings, inputs_file=bad)
    with pytest.raises(RolloutUsageError, match="names unknown inputs"):
        rollout.plan()
    assert server.loads == []
