"""A perf sweep from settings to results: prepare requests, hold each level, measure windows until stable.

    run_sweep(settings, observer) -> SweepReport

The observer gets told about levels and windows (the CLI draws a live Rich display from it); the
report carries the per-level results that `report.py` writes as JSON, CSV, table and plot.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from tritonctl.perf.collector import LoadGenerator
from tritonctl.perf.control import ControlClient, StatsSnapshot, connect
from tritonctl.perf.encode import grpc_payload, http_payload
from tritonctl.perf.errors import PerfError
from tritonctl.perf.inputs import Array, InputSpec, build_steps, resolve_inputs
from tritonctl.perf.loadgen import WorkerJob
from tritonctl.perf.measure import LevelResult, Window, is_stable, merge_windows
from tritonctl.perf.sequences import SequencePlan, is_sequence_model
from tritonctl.perf.settings import STABILITY_WINDOWS, LoadLevel, PerfSettings
from tritonctl.perf.shared_memory import PerfRegions, grpc_shm_payload, http_shm_payload

# A count window that never fills (a stalled server) is closed after this many measurement intervals.
COUNT_WINDOW_CAP_INTERVALS = 10


class SweepObserver(Protocol):
    def level_started(self, level: LoadLevel, index: int, total: int) -> None: ...
    def window_measured(self, level: LoadLevel, trial: int, window: Window, batch_size: int) -> None: ...
    def level_finished(self, result: LevelResult) -> None: ...


class SilentObserver:
    def level_started(self, level: LoadLevel, index: int, total: int) -> None:
        pass

    def window_measured(self, level: LoadLevel, trial: int, window: Window, batch_size: int) -> None:
        pass

    def level_finished(self, result: LevelResult) -> None:
        pass


@dataclass
class SweepReport:
    model: str
    protocol: str
    url: str
    batch_size: int
    results: list[LevelResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    statistics_available: bool = True
    stopped_by_budget: bool = False

    def to_json(self) -> dict[str, Any]:
        """The layout of issue #5: {model, protocol, url, results: [...]}."""
        return {
            "model": self.model,
            "protocol": self.protocol,
            "url": self.url,
            "results": [result.to_json() for result in self.results],
        }


def prepare_payloads(
    settings: PerfSettings, control: ControlClient, regions: PerfRegions | None = None
) -> tuple[list[InputSpec], list[bytes]]:
    """Ask the server what the model takes, build the request data, serialize every request once
    (with `regions`: the data goes into shared-memory regions the requests name)."""
    info = control.model_info(settings.model, settings.model_version)
    config = control.model_config(settings.model, settings.model_version)
    specs = resolve_inputs(info, config, settings.inputs)
    steps = build_steps(specs, settings.inputs)
    if regions is not None:
        return specs, shm_payloads(settings, regions, specs, steps, [o.name for o in info.outputs])
    if settings.protocol == "grpc":
        payloads = [grpc_payload(settings.model, settings.model_version, specs, step) for step in steps]
    else:
        payloads = [
            http_payload(
                settings.url,
                model=settings.model,
                version=settings.model_version,
                specs=specs,
                step=step,
                encoding=settings.inputs.http_encoding,
            )
            for step in steps
        ]
    return specs, payloads


def shm_payloads(
    settings: PerfSettings,
    regions: PerfRegions,
    specs: list[InputSpec],
    steps: list[dict[str, Array]],
    output_names: list[str],
) -> list[bytes]:
    """The requests of a --shared-memory run: every step's inputs in regions of their own."""
    outputs = regions.outputs(output_names)
    size = settings.output_shared_memory_size
    payloads = []
    for index, step in enumerate(steps):
        placed = regions.inputs(specs, step, index)
        fields: dict[str, Any] = {
            "specs": specs,
            "step": step,
            "placed": placed,
            "outputs": outputs,
            "output_size": size,
        }
        if settings.protocol == "grpc":
            payloads.append(grpc_shm_payload(settings.model, settings.model_version, **fields))
        else:
            payloads.append(http_shm_payload(settings.url, settings.model, settings.model_version, **fields))
    return payloads


class _LevelMeasurement:
    """Holds one level through warm-up and windows until stable or out of trials."""

    def __init__(
        self,
        settings: PerfSettings,
        generator: LoadGenerator,
        control: ControlClient,
        with_stats: bool,
        observer: SweepObserver,
    ) -> None:
        self.settings = settings
        self.generator = generator
        self.control = control
        self.with_stats = with_stats
        self.observer = observer

    def _stats(self) -> StatsSnapshot | None:
        if not self.with_stats:
            return None
        return self.control.statistics(self.settings.model, self.settings.model_version)

    def _window_end(self, start: int) -> int:
        measurement = self.settings.measurement
        interval_ns = measurement.interval_ms * 1_000_000
        if measurement.request_count is None:
            end = start + interval_ns
            self.generator.pump(end)
            return end
        cap = start + interval_ns * COUNT_WINDOW_CAP_INTERVALS
        while time.monotonic_ns() < cap:
            self.generator.pump(time.monotonic_ns() + 20_000_000)
            candidate = self.generator.store.nth_completion(start, measurement.request_count)
            if candidate is not None:
                self.generator.wait_flushed(candidate + 1)
                final = self.generator.store.nth_completion(start, measurement.request_count)
                return (final if final is not None else candidate) + 1
        return time.monotonic_ns()

    def run(self, level: LoadLevel) -> LevelResult:
        measurement = self.settings.measurement
        batch = self.settings.inputs.batch_size
        self.generator.set_level(level)
        start = time.monotonic_ns() + measurement.warmup_ms * 1_000_000
        self.generator.pump(start)
        snapshots = [self._stats()]
        windows: list[Window] = []
        stable = False
        for trial in range(1, max(measurement.max_trials, 1) + 1):
            end = self._window_end(start)
            snapshots.append(self._stats())
            self.generator.wait_flushed(end)
            latencies, errors = self.generator.store.window(start, end)
            before, after = snapshots[-2], snapshots[-1]
            delta = after.minus(before) if before is not None and after is not None else None
            window = Window(start, end, latencies, errors, delta)
            windows.append(window)
            self.observer.window_measured(level, trial, window, batch)
            if window.successes == 0 and errors > 0:
                raise PerfError(
                    f"every request failed at {level.label}: {self.generator.store.first_error()}"
                )
            stable = is_stable(windows, batch, measurement.stability_percentage, measurement.percentile)
            if stable:
                break
            start = end
        merged = min(len(windows), STABILITY_WINDOWS)
        first, last = snapshots[-1 - merged], snapshots[-1]
        delta = last.minus(first) if first is not None and last is not None else None
        return merge_windows(level, windows, batch, stable, delta)


def sequence_plan(settings: PerfSettings, control: ControlClient) -> SequencePlan | None:
    """How to send sequences when the model is stateful (config sequence_batching), else None."""
    config = control.model_config(settings.model, settings.model_version)
    if not is_sequence_model(config):
        return None
    if any(level.mode != "concurrency" for level in settings.levels):
        raise PerfError(
            "a sequence model is measured by concurrency (live sequences): use --concurrency-range"
        )
    start, end = settings.sequence_id_range
    return SequencePlan(settings.sequence_length, start, end)


def open_generator(
    settings: PerfSettings, payloads: list[bytes], sequence: SequencePlan | None = None
) -> LoadGenerator:
    """Start `settings.workers` load processes (they stay idle until a level is set)."""
    jobs = [
        WorkerJob(
            settings.protocol,
            settings.url,
            payloads,
            index,
            settings.workers,
            settings.distribution,
            settings.inputs.seed,
            settings.grpc_client,
            sequence,
        )
        for index in range(settings.workers)
    ]
    return LoadGenerator(jobs)


def run_sweep(
    settings: PerfSettings,
    observer: SweepObserver | None = None,
    control: ControlClient | None = None,
    generator: LoadGenerator | None = None,
) -> SweepReport:
    """Measure every level of `settings.levels` in order (stopping early past the latency budget).

    `control` and `generator` may be shared across sweeps (tune does); otherwise they are opened
    here and closed at the end.
    """
    observer = observer or SilentObserver()
    own_control = control is None
    own_generator = generator is None
    control = control or connect(settings.protocol, settings.url)
    report = SweepReport(settings.model, settings.protocol, settings.url, settings.inputs.batch_size)
    regions = None
    if settings.shared_memory == "system":
        regions = PerfRegions(settings.protocol, settings.url, settings.output_shared_memory_size)
    try:
        _, payloads = prepare_payloads(settings, control, regions)
        report.statistics_available = control.statistics(settings.model, settings.model_version) is not None
        if not report.statistics_available:
            report.warnings.append("the server has no statistics endpoint: no server-side breakdown")
        sequence = sequence_plan(settings, control)
        if generator is None:
            generator = open_generator(settings, payloads, sequence)
        else:
            generator.set_payloads(payloads)
        measure = _LevelMeasurement(settings, generator, control, report.statistics_available, observer)
        for index, level in enumerate(settings.levels):
            observer.level_started(level, index, len(settings.levels))
            try:
                result = measure.run(level)
            finally:
                generator.idle()
            report.results.append(result)
            observer.level_finished(result)
            if not result.stable:
                report.warnings.append(
                    f"{level.label}: not stable within {settings.measurement.stability_percentage:g}% after "
                    f"{result.windows} windows; reporting the last {min(result.windows, STABILITY_WINDOWS)}"
                )
            budget = settings.latency_budget_ms
            if budget is not None and result.latency_us["p99"] > budget * 1000.0:
                report.stopped_by_budget = True
                report.warnings.append(
                    f"{level.label}: p99 {result.latency_us['p99'] / 1000:.2f} ms is over the latency budget "
                    f"of {budget:g} ms; sweep stopped"
                )
                break
    finally:
        if own_generator and generator is not None:
            generator.close()
        if own_control:
            control.close()
        if regions is not None:
            regions.close()
    return report
