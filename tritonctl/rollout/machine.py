"""The rollout state machine: load beside -> shadow -> canary steps -> promote, or roll back.

    PLANNED -> LOADING -> SHADOW -> CANARY (one hold per step) -> PROMOTING -> DONE
         any failed gate, error or Ctrl-C -> ROLLING_BACK -> ROLLED_BACK | ROLLBACK_FAILED

Every transition is written to the state file before the server is asked to change, so another
shell always sees where a rollout stands. The machine talks to the server only through the
`RolloutServer` methods (tritonctl.client.TritonConnection has them) and to the person only
through an `Observer`, so the CLI stays a thin presenter and tests can drive every path.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from server.errors import ServerError
from tritonctl.rollout.errors import GateFailed, NothingChanged, RolloutError
from tritonctl.rollout.gates import CanaryVerdict, VersionCounters, counters_by_version, judge_canary
from tritonctl.rollout.interrupts import interrupts_deferred
from tritonctl.rollout.plan import RolloutPlan, draw_plan, ready_versions, routed_config, step_weights
from tritonctl.rollout.shadow import InferServer, ShadowReport, run_shadow, shadow_samples
from tritonctl.rollout.state import Phase, RolloutRecord, StateStore

if TYPE_CHECKING:
    from tritonctl.client import ModelSignature
    from tritonctl.rollout.plan import RolloutSettings


class RolloutServer(InferServer, Protocol):
    """What a rollout needs from a Triton-compatible server (TritonConnection has it all)."""

    def repository_index(self, ready_only: bool = False) -> list[dict[str, str]]: ...
    def model_config(self, model: str, version: str = "") -> dict[str, Any]: ...
    def model_ready(self, model: str, version: str = "") -> bool: ...
    def model_statistics(self, model: str = "", version: str = "") -> list[dict[str, Any]]: ...
    def signature(self, model: str, version: str = "") -> ModelSignature: ...
    def load_model(self, model: str, config_json: str | None = None) -> None: ...


class Observer:
    """What the machine reports as it goes; the CLI overrides these to print."""

    def phase(self, phase: Phase, message: str) -> None:
        """A new phase begins."""

    def shadow(self, report: ShadowReport) -> None:
        """The shadow check is over."""

    def holding(self, percent: int, seconds: float) -> None:
        """A canary step is loaded and its hold begins (Ctrl-C from here rolls back)."""

    def canary_step(self, percent: int, verdict: CanaryVerdict, baseline: VersionCounters) -> None:
        """A canary step held its time and passed (a failing one raises instead)."""


@dataclass(frozen=True)
class RolloutOutcome:
    record: RolloutRecord
    shadow: ShadowReport | None = None
    interrupted: bool = False
    changed: bool = True  # False: the server refused the first load, so nothing was rolled back

    @property
    def promoted(self) -> bool:
        return self.record.phase is Phase.DONE


class RolloutMachine:
    """Runs one rollout of one model against one server."""

    def __init__(
        self,
        server: RolloutServer,
        model: str,
        settings: RolloutSettings,
        store: StateStore,
        *,
        server_url: str = "",
        protocol: str = "grpc",
        observer: Observer | None = None,
        sleep: Callable[[float], None] = time.sleep,  # the CLI passes Interrupts.sleep
        clock: Callable[[], float] = time.monotonic,
        latency_clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.server = server
        self.model = model
        self.settings = settings
        self.store = store
        self.server_url = server_url
        self.protocol = protocol
        self.observer = observer or Observer()
        self._sleep = sleep
        self._clock = clock
        self._latency_clock = latency_clock

    # -- preflight -------------------------------------------------------------------------------
    def plan(self) -> RolloutPlan:
        """Check the server's state and the state file allow the rollout; change nothing."""
        latest = self.store.latest(self.model)
        if latest is not None and latest.owner_alive():
            raise RolloutError(
                f"a rollout of '{self.model}' is already running "
                f"(pid {latest.pid}, phase {latest.phase.value})"
            )
        index = self.server.repository_index()
        config = self.server.model_config(self.model)
        plan = draw_plan(self.model, self.settings, index, config)
        if self.settings.inputs_file is not None:  # a bad --inputs file is a usage error before any change
            current = self.server.signature(self.model, str(plan.from_version))
            shadow_samples(current, plan.batched, self.settings.inputs_file, self.settings.seed, 1)
        return plan

    # -- the run ---------------------------------------------------------------------------------
    def run(self, plan: RolloutPlan) -> RolloutOutcome:
        """Carry the plan out; on any failure put the original config back. Never raises for a
        failed gate or server error: the outcome's record says what happened."""
        record = RolloutRecord(
            self.model,
            self.server_url,
            self.protocol,
            plan.from_version,
            plan.to_version,
            plan.original_config,
        )
        self._enter(record, Phase.PLANNED, f"version {plan.from_version} -> {plan.to_version}")
        shadow: ShadowReport | None = None
        try:
            self._load_beside(record, plan)
            shadow = self._shadow(record, plan)
            self._canary(record, plan)
            self._promote(record, plan)
        except NothingChanged as exc:
            record.reason = str(exc)
            self._enter(record, Phase.ROLLED_BACK, f"nothing to roll back: {exc}")
            return RolloutOutcome(record, shadow, changed=False)
        except KeyboardInterrupt:
            self._roll_back(record, "interrupted (Ctrl-C)")
            return RolloutOutcome(record, shadow, interrupted=True)
        except GateFailed as exc:
            self._roll_back(record, str(exc))
        except ServerError as exc:
            self._roll_back(record, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # anything unexpected still puts the server back
            self._roll_back(record, f"unexpected {type(exc).__name__}: {exc}")
        return RolloutOutcome(record, shadow)

    def _enter(self, record: RolloutRecord, phase: Phase, message: str) -> None:
        record.phase = phase
        record.note(message)
        self.store.save(record)
        self.observer.phase(phase, message)

    def _load(
        self, record: RolloutRecord, plan: RolloutPlan, versions: list[int], weights: dict[int, int] | None
    ) -> None:
        config = routed_config(plan.original_config, versions, weights)
        record.weights = {str(version): weight for version, weight in (weights or {}).items()}
        self.store.save(record)
        self.server.load_model(self.model, json.dumps(config))

    def _load_beside(self, record: RolloutRecord, plan: RolloutPlan) -> None:
        old, new = plan.from_version, plan.to_version
        self._enter(record, Phase.LOADING, f"loading version {new} beside {old} (weights {old}:100)")
        try:
            self._load(record, plan, [old, new], {old: 100})
        except ServerError as exc:
            if "not allowed" in str(exc):  # control mode none/poll: the server changed nothing
                raise NothingChanged(
                    f"the server refuses model loads ({exc}): start it with --model-control-mode=explicit"
                ) from None
            raise GateFailed(f"version {new} did not load: {exc}") from None
        if not self.server.model_ready(self.model, str(new)):
            raise GateFailed(f"version {new} is not READY after its load")

    def _shadow(self, record: RolloutRecord, plan: RolloutPlan) -> ShadowReport:
        settings = plan.settings
        self._enter(
            record, Phase.SHADOW, f"shadow check: {settings.shadow_requests} requests to both versions"
        )
        signature = self.server.signature(self.model, str(plan.to_version))
        samples = shadow_samples(
            signature, plan.batched, settings.inputs_file, settings.seed, settings.shadow_requests
        )
        report = run_shadow(
            self.server,
            self.model,
            current=plan.from_version,
            candidate=plan.to_version,
            samples=samples,
            count=settings.shadow_requests,
            gates=settings.gates,
            clock=self._latency_clock,
        )
        self.observer.shadow(report)
        record.note(
            "shadow check " + ("passed" if report.passed else "failed: " + "; ".join(report.problems))
        )
        self.store.save(record)
        if not report.passed:
            raise GateFailed("shadow check failed: " + "; ".join(report.problems))
        return report

    def _counters(self) -> dict[int, VersionCounters]:
        return counters_by_version(self.server.model_statistics(self.model))

    def _canary(self, record: RolloutRecord, plan: RolloutPlan) -> None:
        old, new = plan.from_version, plan.to_version
        canary_start = self._counters()
        for percent in plan.settings.steps:
            weights = step_weights(old, new, percent)
            self._enter(record, Phase.CANARY, f"{percent}% of unversioned requests to version {new}")
            self._load(record, plan, [old, new], weights)
            step_start = self._counters()
            self.observer.holding(percent, plan.settings.hold_secs)
            verdict = self._hold(plan, step_start, canary_start)
            baseline = (
                self._counters().get(old, VersionCounters()).since(canary_start.get(old, VersionCounters()))
            )
            record.note(
                f"{percent}% held {plan.settings.hold_secs:g}s: {verdict.candidate.requests} requests"
            )
            self.store.save(record)
            self.observer.canary_step(percent, verdict, baseline)

    def _hold(
        self,
        plan: RolloutPlan,
        step_start: dict[int, VersionCounters],
        canary_start: dict[int, VersionCounters],
    ) -> CanaryVerdict:
        """Hold a step, reading the statistics every poll; a failing gate ends it at once."""
        old, new = plan.from_version, plan.to_version
        settings = plan.settings
        deadline = self._clock() + settings.hold_secs
        while True:
            remaining = deadline - self._clock()
            self._sleep(max(0.0, min(settings.poll_secs, remaining)))
            final = self._clock() >= deadline
            if not self.server.model_ready(self.model, str(new)):
                raise GateFailed(f"version {new} stopped being READY during the canary")
            now = self._counters()
            candidate = now.get(new, VersionCounters()).since(step_start.get(new, VersionCounters()))
            baseline = now.get(old, VersionCounters()).since(canary_start.get(old, VersionCounters()))
            verdict = judge_canary(candidate, baseline, settings.gates, final=final)
            if not verdict.passed:
                raise GateFailed(f"canary gate failed: {verdict.reason}")
            if final:
                return verdict

    def _promote(self, record: RolloutRecord, plan: RolloutPlan) -> None:
        old, new = plan.from_version, plan.to_version
        self._enter(record, Phase.PROMOTING, f"policy specific [{new}]; version {old} unloads after draining")
        self._load(record, plan, [new], None)
        if not self.server.model_ready(self.model, str(new)):
            raise GateFailed(f"version {new} is not READY after the promotion")
        still = [v for v in ready_versions(self.server.repository_index(), self.model) if v != new]
        if still:
            raise GateFailed(f"version(s) {still} still READY after the promotion")
        self._enter(record, Phase.DONE, f"version {new} serves all traffic; version {old} is unloaded")

    # -- going back ------------------------------------------------------------------------------
    def _roll_back(self, record: RolloutRecord, reason: str) -> None:
        record.reason = reason
        self._enter(record, Phase.ROLLING_BACK, f"rolling back: {reason}")
        with interrupts_deferred(
            lambda: self.observer.phase(Phase.ROLLING_BACK, "still rolling back, please wait")
        ):
            try:
                restore(self.server, record)
            except ServerError as exc:
                record.reason = f"{reason}; the rollback failed too: {exc}"
                self._enter(record, Phase.ROLLBACK_FAILED, record.reason)
                return
        self._enter(record, Phase.ROLLED_BACK, f"version {record.from_version} serves as before: {reason}")


def restore(server: RolloutServer, record: RolloutRecord) -> None:
    """Load the config the model had before the rollout, and check it took (raises ServerError)."""
    server.load_model(record.model, json.dumps(record.original_config))
    record.weights = {}
    if not server.model_ready(record.model, str(record.from_version)):
        raise RolloutError(f"version {record.from_version} is not READY after loading the original config")
    leftover = [v for v in ready_versions(server.repository_index(), record.model) if v == record.to_version]
    if leftover and record.to_version != record.from_version:
        raise RolloutError(f"version {record.to_version} is still READY after loading the original config")


def rollback(server: RolloutServer, store: StateStore, model: str, *, force: bool = False) -> RolloutRecord:
    """`tritonctl rollout rollback`: put the model back as it was before its last rollout."""
    record = store.latest(model)
    if record is None:
        raise RolloutError(f"no rollout of '{model}' in {store.path}")
    if record.owner_alive() and not force:
        raise RolloutError(
            f"the rollout of '{model}' is still running (pid {record.pid}, phase {record.phase.value}): "
            "interrupt it (Ctrl-C rolls back), or pass --force"
        )
    record.reason = "rolled back on request (tritonctl rollout rollback)"
    record.phase = Phase.ROLLING_BACK
    record.note(record.reason)
    store.save(record)
    try:
        restore(server, record)
    except ServerError as exc:
        record.phase = Phase.ROLLBACK_FAILED
        record.note(f"rollback failed: {exc}")
        store.save(record)
        raise
    record.phase = Phase.ROLLED_BACK
    record.note(f"version {record.from_version} serves as before the rollout")
    store.save(record)
    return record
