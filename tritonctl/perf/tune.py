"""`tune`: what model_analyzer does, without its container.

For each candidate config (instance count x max_batch_size x dynamic-batching delay), reload the
model over the repository API with a config override, sweep load with `run_sweep`, score the
sweep, and rank. The original config is reloaded at the end whatever happens (error, Ctrl-C,
SIGTERM). The load API needs the server in explicit model-control mode.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import TYPE_CHECKING, Literal, Protocol

from tritonctl.perf.collector import LoadGenerator
from tritonctl.perf.control import ControlClient, connect
from tritonctl.perf.errors import ModelControlRefused, PerfError, PerfUsageError
from tritonctl.perf.measure import LevelResult
from tritonctl.perf.runner import SilentObserver, SweepObserver, SweepReport, open_generator, run_sweep
from tritonctl.perf.settings import PerfSettings

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2

Objective = Literal["throughput", "latency"]
Search = Literal["brute", "quick"]
DYNAMIC_BATCHING_OFF = -1  # a max_queue_delay_us axis value that switches dynamic batching off


@dataclass(frozen=True)
class Candidate:
    """One point of the search space; None leaves that setting as in the original config."""

    instances: int | None = None
    max_batch_size: int | None = None
    max_queue_delay_us: int | None = None  # DYNAMIC_BATCHING_OFF removes dynamic_batching

    @property
    def label(self) -> str:
        parts = []
        if self.instances is not None:
            parts.append(f"instances={self.instances}")
        if self.max_batch_size is not None:
            parts.append(f"max_batch={self.max_batch_size}")
        if self.max_queue_delay_us is not None:
            off = self.max_queue_delay_us == DYNAMIC_BATCHING_OFF
            parts.append("dynamic_batching=off" if off else f"delay={self.max_queue_delay_us}us")
        return " ".join(parts) or "original"

    def apply(self, original: model_config_pb2.ModelConfig) -> model_config_pb2.ModelConfig:
        """The original config with this candidate's settings; raises PerfUsageError if impossible."""
        config = type(original)()
        config.CopyFrom(original)
        if self.instances is not None:
            if not config.instance_group:
                config.instance_group.add()
            for group in config.instance_group:
                group.count = self.instances
        if self.max_batch_size is not None:
            config.max_batch_size = self.max_batch_size
            if config.HasField("dynamic_batching"):
                kept = [
                    size
                    for size in config.dynamic_batching.preferred_batch_size
                    if size <= self.max_batch_size
                ]
                del config.dynamic_batching.preferred_batch_size[:]
                config.dynamic_batching.preferred_batch_size.extend(kept)
        if self.max_queue_delay_us == DYNAMIC_BATCHING_OFF:
            config.ClearField("dynamic_batching")
        elif self.max_queue_delay_us is not None:
            config.dynamic_batching.max_queue_delay_microseconds = self.max_queue_delay_us
        if config.HasField("dynamic_batching") and config.max_batch_size == 0:
            raise PerfUsageError(f"{self.label}: dynamic batching needs max_batch_size > 0")
        return config


@dataclass(frozen=True)
class SearchSpace:
    """Values per axis; an empty axis is left as in the original config."""

    instances: tuple[int, ...] = ()
    max_batch_sizes: tuple[int, ...] = ()
    max_queue_delays_us: tuple[int, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (self.instances or self.max_batch_sizes or self.max_queue_delays_us)

    def _axes(self) -> list[tuple[int | None, ...]]:
        return [axis or (None,) for axis in (self.instances, self.max_batch_sizes, self.max_queue_delays_us)]

    def grid(self) -> list[Candidate]:
        a, b, c = self._axes()
        return [Candidate(x, y, z) for x in a for y in b for z in c]

    def neighbors(self, candidate: Candidate) -> list[Candidate]:
        """Candidates one step away along a single axis (hill-climbing moves)."""
        axes = self._axes()
        point = [candidate.instances, candidate.max_batch_size, candidate.max_queue_delay_us]
        found = []
        for axis_index, axis in enumerate(axes):
            position = axis.index(point[axis_index])
            for step in (-1, 1):
                if 0 <= position + step < len(axis):
                    moved = list(point)
                    moved[axis_index] = axis[position + step]
                    found.append(Candidate(*moved))
        return found

    def start_near(self, original: model_config_pb2.ModelConfig) -> Candidate:
        """The grid point closest to the original config (where hill climbing starts)."""

        def nearest(axis: tuple[int | None, ...], value: int) -> int | None:
            if axis == (None,):
                return None
            return min(axis, key=lambda v: abs((v if v is not None else 0) - value))

        count = original.instance_group[0].count if original.instance_group else 1
        delay = (
            original.dynamic_batching.max_queue_delay_microseconds
            if original.HasField("dynamic_batching")
            else DYNAMIC_BATCHING_OFF
        )
        a, b, c = self._axes()
        return Candidate(nearest(a, count), nearest(b, original.max_batch_size), nearest(c, delay))


@dataclass(frozen=True)
class Constraints:
    objective: Objective = "throughput"
    latency_budget_ms: float | None = None
    min_throughput: float | None = None

    def admits(self, level: LevelResult) -> bool:
        if level.errors > 0:
            return False
        if self.latency_budget_ms is not None and level.latency_us["p99"] > self.latency_budget_ms * 1000:
            return False
        return self.min_throughput is None or level.throughput >= self.min_throughput


@dataclass
class CandidateResult:
    candidate: Candidate
    config: model_config_pb2.ModelConfig | None
    report: SweepReport | None = None
    error: str | None = None
    best: LevelResult | None = None  # the level that scores this candidate
    feasible: bool = False

    def score(self, objective: Objective) -> float:
        """Larger is better for either objective (latency scores are negated p99)."""
        if self.best is None:
            return float("-inf")
        return self.best.throughput if objective == "throughput" else -self.best.latency_us["p99"]


def evaluate(result: CandidateResult, constraints: Constraints) -> None:
    """Pick the level that represents the candidate under the objective and constraints."""
    if result.report is None or not result.report.results:
        return
    levels = result.report.results
    admitted = [level for level in levels if constraints.admits(level)]
    result.feasible = bool(admitted)
    pool = admitted or levels
    if constraints.objective == "throughput":
        result.best = max(pool, key=lambda level: level.throughput)
    else:
        result.best = min(pool, key=lambda level: level.latency_us["p99"])


def rank(results: list[CandidateResult], objective: Objective) -> list[CandidateResult]:
    """Feasible candidates first, each group best score first; failed candidates last."""
    return sorted(results, key=lambda r: (r.error is None, r.feasible, r.score(objective)), reverse=True)


@dataclass
class TuneSettings:
    perf: PerfSettings
    space: SearchSpace
    constraints: Constraints = field(default_factory=Constraints)
    search: Search = "brute"


@dataclass
class TuneReport:
    model: str
    original: model_config_pb2.ModelConfig
    baseline: CandidateResult
    results: list[CandidateResult]  # in evaluation order, baseline excluded
    objective: Objective
    restored: bool = False
    warnings: list[str] = field(default_factory=list)

    def ranked(self) -> list[CandidateResult]:
        return rank(self.results, self.objective)

    @property
    def winner(self) -> CandidateResult | None:
        """The best candidate (the original config aside)."""
        ranked = [result for result in self.ranked() if result.error is None and result.best is not None]
        return ranked[0] if ranked else None

    @property
    def original_wins(self) -> bool:
        """No candidate beats the config the model was loaded with."""
        winner = self.winner
        return winner is None or rank([self.baseline, winner], self.objective)[0] is self.baseline


class TuneObserver(Protocol):
    def candidate_started(self, candidate: Candidate, index: int) -> SweepObserver: ...
    def candidate_finished(self, result: CandidateResult) -> None: ...


class SilentTuneObserver:
    def candidate_started(self, candidate: Candidate, index: int) -> SweepObserver:
        return SilentObserver()

    def candidate_finished(self, result: CandidateResult) -> None:
        pass


class _Interrupted(KeyboardInterrupt):
    """SIGTERM turned into an interrupt so the `finally` that restores the config runs."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Interrupted()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _no_interrupts() -> Iterator[None]:
    """Hold Ctrl-C / SIGTERM while the original config is put back (a second Ctrl-C must not stop it)."""
    try:
        saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


class _Tuner:
    def __init__(
        self,
        settings: TuneSettings,
        control: ControlClient,
        observer: TuneObserver,
        original: model_config_pb2.ModelConfig,
    ) -> None:
        self.settings = settings
        self.original = original
        self.control = control
        self.observer = observer
        self.model = settings.perf.model
        self.evaluated: dict[Candidate, CandidateResult] = {}
        self.order: list[CandidateResult] = []
        self.touched = False  # a load was attempted: the original config must be put back
        self.generator: LoadGenerator | None = None  # shared by every sweep: starting processes costs seconds

    def measure(self, candidate: Candidate, config: model_config_pb2.ModelConfig | None) -> CandidateResult:
        result = CandidateResult(candidate, config)
        sweep_observer = self.observer.candidate_started(candidate, len(self.order))
        try:
            if config is not None:
                first = not self.touched
                self.touched = True
                try:
                    self.control.load_model(self.model, config)
                except ModelControlRefused:
                    self.touched = not first  # refused outright: nothing was changed
                    raise
            if self.generator is None:
                self.generator = open_generator(self.settings.perf, [])
            result.report = run_sweep(self.settings.perf, sweep_observer, self.control, self.generator)
        except ModelControlRefused:
            raise
        except PerfError as exc:  # this candidate failed (load refused, every request failed): go on
            result.error = str(exc)
        evaluate(result, self.settings.constraints)
        self.observer.candidate_finished(result)
        return result

    def close(self) -> None:
        if self.generator is not None:
            self.generator.close()
            self.generator = None

    def visit(self, candidate: Candidate) -> CandidateResult:
        if candidate in self.evaluated:
            return self.evaluated[candidate]
        try:
            config = candidate.apply(self.original)
        except PerfUsageError as exc:
            result = CandidateResult(candidate, None, error=str(exc))
        else:
            result = self.measure(candidate, config)
        self.evaluated[candidate] = result
        self.order.append(result)
        return result


def brute_force(space: SearchSpace, visit: Callable[[Candidate], CandidateResult]) -> None:
    """Every combination of the grid."""
    for candidate in space.grid():
        visit(candidate)


def hill_climb(
    space: SearchSpace, start: Candidate, visit: Callable[[Candidate], CandidateResult], objective: Objective
) -> None:
    """From `start`, move to the best neighbour while it beats the current point (one axis step at a time)."""
    current = visit(start)
    while True:
        neighbors = [visit(candidate) for candidate in space.neighbors(current.candidate)]
        best = rank([current, *neighbors], objective)[0]
        if best is current:
            return
        current = best


def run_tune(settings: TuneSettings, observer: TuneObserver | None = None) -> TuneReport:
    """Measure the model as loaded, then every candidate; always reload the original config."""
    observer = observer or SilentTuneObserver()
    perf = replace(settings.perf, latency_budget_ms=None)  # the budget filters levels, it does not cut sweeps
    settings = replace(settings, perf=perf)
    control = connect(perf.protocol, perf.url)
    with contextlib.ExitStack() as stack:
        stack.callback(control.close)
        original = control.model_config(perf.model, perf.model_version)
        if original is None:
            raise PerfError(
                f"the server gives no config for {perf.model!r}: tune needs the model config endpoint"
            )
        tuner = _Tuner(settings, control, observer, original)
        stack.callback(tuner.close)
        baseline = tuner.measure(Candidate(), None)
        if baseline.error is not None:
            raise PerfError(f"measuring the model as loaded failed: {baseline.error}")
        report = TuneReport(perf.model, original, baseline, tuner.order, settings.constraints.objective)
        report.restored = True  # nothing to restore until a candidate is loaded
        with _sigterm_as_interrupt():
            try:
                if settings.search == "quick":
                    start = settings.space.start_near(original)
                    hill_climb(settings.space, start, tuner.visit, settings.constraints.objective)
                else:
                    brute_force(settings.space, tuner.visit)
            finally:
                if tuner.touched:
                    with _no_interrupts():
                        restore_error = _restore(control, perf.model, original)
                    report.restored = restore_error is None
                    if restore_error is not None:
                        report.warnings.append(restore_error)
        return report


def _restore(control: ControlClient, model: str, original: model_config_pb2.ModelConfig) -> str | None:
    try:
        control.load_model(model, original)
    except PerfError as exc:
        return f"could not reload the original config of {model!r}: {exc}"
    return None
