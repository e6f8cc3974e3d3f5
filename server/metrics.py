"""Prometheus metrics on the metrics port (`GET /metrics`), with Triton's names, labels and help texts.

A custom prometheus-client Collector reads the per-version `ModelStats` counters at scrape time, so
counting costs the hot path nothing beyond the plain int updates the schedulers already make.
CPU (psutil) and GPU (pynvml, imported lazily; absent or failing = no GPU metrics) gauges are
sampled every `--metrics-interval-ms` by a background task, as Triton does.

The text is written in Triton's form: counters keep their own names (`nv_inference_count`, not
prometheus-client's `nv_inference_count_total`), so existing dashboards and autoscaling rules match.
The HTTP side is a tiny asyncio server in the main event loop: scrapes read the counters on the
same thread that updates them, so no locks are needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from server.core.stats import FAILURE_REASONS, ModelStats, StatsEntry
from server.workers.custom_metrics import KIND_NAMES
from server.workers.custom_metrics import STORE as CUSTOM_METRICS

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (name, help, value of a ModelStats) for the per-version counters; help texts are Triton's.
_MODEL_COUNTERS: list[tuple[str, str, Callable[[ModelStats], float]]] = [
    (
        "nv_inference_request_success",
        "Number of successful inference requests, all batch sizes",
        lambda s: s.success_count,
    ),
    (
        "nv_inference_count",
        "Number of inferences performed (does not include cached requests)",
        lambda s: s.inference_count,
    ),
    (
        "nv_inference_exec_count",
        "Number of model executions performed (does not include cached requests)",
        lambda s: s.execution_count,
    ),
    (
        "nv_inference_request_duration_us",
        "Cumulative inference request duration in microseconds (includes cached requests)",
        lambda s: s.success_ns // 1000,
    ),
    (
        "nv_inference_queue_duration_us",
        "Cumulative inference queuing duration in microseconds (includes cached requests)",
        lambda s: s.queue_ns // 1000,
    ),
    (
        "nv_inference_compute_input_duration_us",
        "Cumulative compute input duration in microseconds (does not include cached requests)",
        lambda s: s.compute_input_ns // 1000,
    ),
    (
        "nv_inference_compute_infer_duration_us",
        "Cumulative compute inference duration in microseconds (does not include cached requests)",
        lambda s: s.compute_infer_ns // 1000,
    ),
    (
        "nv_inference_compute_output_duration_us",
        "Cumulative inference compute output duration in microseconds (does not include cached requests)",
        lambda s: s.compute_output_ns // 1000,
    ),
]


# Per-model response cache counters (Triton 2.51's names and help texts), for the versions that use it.
_CACHE_COUNTERS: list[tuple[str, str, Callable[[ModelStats], float]]] = [
    ("nv_cache_num_hits_per_model", "Number of cache hits per model", lambda s: s.cache_hit_count),
    (
        "nv_cache_hit_duration_per_model",
        "Total cache hit duration per model, in microseconds",
        lambda s: s.cache_hit_ns // 1000,
    ),
    ("nv_cache_num_misses_per_model", "Number of cache misses per model", lambda s: s.cache_miss_count),
    (
        "nv_cache_miss_duration_per_model",
        "Total cache miss (insert+lookup) duration per model, in microseconds",
        lambda s: s.cache_miss_ns // 1000,
    ),
]


@dataclass
class MetricsSettings:
    """The metrics part of the server options (Triton's flags of the same names)."""

    host: str = "127.0.0.1"
    port: int = 8002
    allow_metrics: bool = True
    allow_gpu_metrics: bool = True
    allow_cpu_metrics: bool = True
    interval_ms: int = 2000  # --metrics-interval-ms

    @classmethod
    def from_options(cls, options: Any) -> MetricsSettings:
        """From ServerOptions; fields it does not have keep Triton's defaults."""
        host = str(getattr(options, "metrics_address", None) or getattr(options, "host", cls.host))
        return cls(
            host=host,
            port=int(getattr(options, "metrics_port", cls.port)),
            allow_metrics=bool(getattr(options, "allow_metrics", True)),
            allow_gpu_metrics=bool(getattr(options, "allow_gpu_metrics", True)),
            allow_cpu_metrics=bool(getattr(options, "allow_cpu_metrics", True)),
            interval_ms=int(getattr(options, "metrics_interval_ms", cls.interval_ms)),
        )


@dataclass
class GpuSample:
    uuid: str
    utilization: float  # 0.0 - 1.0
    memory_total: int
    memory_used: int
    power_watts: float


@dataclass
class SystemSample:
    """The last sample of the CPU and GPU gauges (updated by the sampler task)."""

    cpu_utilization: float | None = None
    cpu_memory_total: int | None = None
    cpu_memory_used: int | None = None
    gpus: list[GpuSample] = field(default_factory=list)


def entries_of(source: Any) -> Callable[[], Iterable[StatsEntry]]:
    """What a scrape reads: `source.stats_entries()`, a registry's `loaded_versions()`, or a callable."""
    if hasattr(source, "stats_entries"):
        return source.stats_entries  # type: ignore[no-any-return]
    if hasattr(source, "loaded_versions"):

        def from_registry() -> Iterator[StatsEntry]:
            for loaded in source.loaded_versions():
                pending = loaded.scheduler.pending
                yield StatsEntry(loaded.name, str(loaded.version), loaded.stats, pending)

        return from_registry
    if callable(source):
        return source  # type: ignore[no-any-return]
    raise TypeError(f"cannot read statistics from {type(source).__name__}")


class TritonCollector(Collector):
    """Builds Triton's metric families from the live statistics at each scrape."""

    def __init__(self, entries: Callable[[], Iterable[StatsEntry]], system: SystemSample) -> None:
        self._entries = entries
        self._system = system

    def collect(self) -> Iterator[Metric]:
        entries = list(self._entries())
        for name, help_text, value_of in _MODEL_COUNTERS[:1]:
            yield _family(name, help_text, "counter", entries, value_of)
        failure = Metric(
            "nv_inference_request_failure", "Number of failed inference requests, all batch sizes", "counter"
        )
        for entry in entries:
            for reason in FAILURE_REASONS:
                labels = {"model": entry.model, "reason": reason, "version": entry.version}
                failure.add_sample(failure.name, labels, entry.stats.failures_by_reason.get(reason, 0))
        yield failure
        for name, help_text, value_of in _MODEL_COUNTERS[1:]:
            yield _family(name, help_text, "counter", entries, value_of)
        cached = [entry for entry in entries if entry.stats.cache_enabled]  # response cache users only
        for name, help_text, value_of in _CACHE_COUNTERS:
            yield _family(name, help_text, "counter", cached, value_of)
        pending = Metric(
            "nv_inference_pending_request_count",
            "Instantaneous number of pending requests awaiting execution per-model.",
            "gauge",
        )
        for entry in entries:
            pending.add_sample(pending.name, {"model": entry.model, "version": entry.version}, entry.pending)
        yield pending
        yield _family(
            "nv_model_load_duration_secs",
            "Model load time in seconds",
            "gauge",
            entries,
            lambda s: s.load_duration_secs,
        )
        yield from self._system_families()

    def _system_families(self) -> Iterator[Metric]:
        system = self._system
        if system.gpus:
            gpu_gauges: list[tuple[str, str, Callable[[GpuSample], float]]] = [
                ("nv_gpu_utilization", "GPU utilization rate [0.0 - 1.0)", lambda g: g.utilization),
                ("nv_gpu_memory_total_bytes", "GPU total memory, in bytes", lambda g: g.memory_total),
                ("nv_gpu_memory_used_bytes", "GPU used memory, in bytes", lambda g: g.memory_used),
                ("nv_gpu_power_usage", "GPU power usage in watts", lambda g: g.power_watts),
            ]
            for name, help_text, value_of in gpu_gauges:
                family = Metric(name, help_text, "gauge")
                for gpu in system.gpus:
                    family.add_sample(name, {"gpu_uuid": gpu.uuid}, value_of(gpu))
                yield family
        for name, help_text, value in (
            ("nv_cpu_utilization", "CPU utilization rate [0.0 - 1.0]", system.cpu_utilization),
            ("nv_cpu_memory_total_bytes", "CPU total memory (RAM), in bytes", system.cpu_memory_total),
            ("nv_cpu_memory_used_bytes", "CPU used memory (RAM), in bytes", system.cpu_memory_used),
        ):
            if value is not None:
                family = Metric(name, help_text, "gauge")
                family.add_sample(name, {}, value)
                yield family


def _family(
    name: str,
    help_text: str,
    kind: str,
    entries: list[StatsEntry],
    value_of: Callable[[ModelStats], float],
) -> Metric:
    family = Metric(name, help_text, kind)
    for entry in entries:
        family.add_sample(name, {"model": entry.model, "version": entry.version}, value_of(entry.stats))
    return family


def render(registry: CollectorRegistry) -> bytes:
    """Prometheus text format as Triton writes it (counter samples without a `_total` suffix)."""
    lines: list[str] = []
    for family in registry.collect():
        if not family.samples:
            continue
        help_text = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        lines.append(f"# HELP {family.name} {help_text}")
        lines.append(f"# TYPE {family.name} {family.type}")
        for sample in family.samples:
            if sample.labels:
                labels = ",".join(f'{key}="{_escape(value)}"' for key, value in sorted(sample.labels.items()))
                lines.append(f"{sample.name}{{{labels}}} {_number(sample.value)}")
            else:
                lines.append(f"{sample.name} {_number(sample.value)}")
    return ("\n".join(lines) + "\n").encode()


def _number(value: float) -> str:
    """Integers without a fraction (`12`, as Triton writes counters), other values in full."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class SystemSampler:
    """Samples CPU (psutil) and GPU (pynvml) gauges every interval into a SystemSample."""

    def __init__(self, sample: SystemSample, cpu: bool, gpu: bool) -> None:
        self.sample = sample
        self._cpu = cpu
        self._nvml: Any = self._start_nvml() if gpu else None

    @staticmethod
    def _start_nvml() -> Any:
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:  # no pynvml, no driver (NVMLError_LibraryNotFound), no GPU: no GPU metrics
            return None
        return pynvml

    def update(self) -> None:
        if self._cpu:
            import psutil

            memory = psutil.virtual_memory()
            self.sample.cpu_utilization = psutil.cpu_percent(interval=None) / 100.0
            self.sample.cpu_memory_total = memory.total
            self.sample.cpu_memory_used = memory.total - memory.available
        if self._nvml is not None:
            self.sample.gpus = self._gpu_samples()

    def _gpu_samples(self) -> list[GpuSample]:
        nvml = self._nvml
        samples: list[GpuSample] = []
        try:
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                uuid = nvml.nvmlDeviceGetUUID(handle)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                samples.append(
                    GpuSample(
                        uuid=uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                        utilization=nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0,
                        memory_total=int(memory.total),
                        memory_used=int(memory.used),
                        power_watts=nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
                    )
                )
        except Exception as error:  # a GPU that stops answering must not break the scrape
            log.debug("GPU metrics unavailable: %s", error)
        return samples

    def close(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
            self._nvml = None


class MetricsServer:
    """The running metrics endpoint; `await stop()` closes it."""

    def __init__(self, registry: CollectorRegistry, sampler: SystemSampler, interval_s: float) -> None:
        self.registry = registry
        self.sampler = sampler
        self.port = 0
        self._interval_s = interval_s
        self._server: asyncio.Server | None = None
        self._sampling: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> None:
        self.sampler.update()
        self._server = await asyncio.start_server(self._handle, host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._sampling = asyncio.get_running_loop().create_task(self._sample_forever())

    async def _sample_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            self.sampler.update()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                method, _, rest = head.partition(b" ")
                path = rest.partition(b" ")[0].partition(b"?")[0]
                keep_alive = b"connection: close" not in head.lower()
                if method in (b"GET", b"HEAD") and path == b"/metrics":
                    body = render(self.registry)
                    status = b"200 OK"
                else:
                    body, status = b"Not Found\n", b"404 Not Found"
                writer.write(
                    b"HTTP/1.1 "
                    + status
                    + b"\r\nContent-Type: "
                    + CONTENT_TYPE.encode()
                    + b"\r\nContent-Length: "
                    + str(len(body)).encode()
                    + (b"\r\n\r\n" if keep_alive else b"\r\nConnection: close\r\n\r\n")
                    + (body if method != b"HEAD" else b"")
                )
                await writer.drain()
                if not keep_alive:
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def stop(self) -> None:
        if self._sampling is not None:
            self._sampling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampling
            self._sampling = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.sampler.close()


class CustomMetricsCollector(Collector):
    """Python models' own metrics (pb_utils.MetricFamily), instances merged (workers/custom_metrics.py)."""

    def collect(self) -> Iterator[Metric]:
        for family, samples in CUSTOM_METRICS.collect():
            metric = Metric(family.name, family.description, KIND_NAMES[family.kind])
            for name, labels, value in samples:
                metric.add_sample(name, labels, value)
            yield metric


class LifecycleCollector(Collector):
    """The lifecycle manager's families (core/registry/lifecycle.py metric_families)."""

    def __init__(self, manager: Any) -> None:
        self._manager = manager

    def collect(self) -> Iterator[Metric]:
        for name, help_text, kind, samples in self._manager.metric_families():
            metric = Metric(name.removesuffix("_total") if kind == "counter" else name, help_text, kind)
            for labels, value in samples:
                metric.add_sample(name, labels, value)
            yield metric


async def start_metrics(source: Any, options: Any) -> MetricsServer | None:
    """Serve `/metrics` for `source` (DataPlane, registry or callable) as `options` say; None if disabled."""
    settings = options if isinstance(options, MetricsSettings) else MetricsSettings.from_options(options)
    if not settings.allow_metrics:
        return None
    sample = SystemSample()
    sampler = SystemSampler(sample, cpu=settings.allow_cpu_metrics, gpu=settings.allow_gpu_metrics)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TritonCollector(entries_of(source), sample))
    registry.register(CustomMetricsCollector())
    if getattr(source, "lifecycle", None) is not None:  # memory per model, loads, evictions (#18)
        registry.register(LifecycleCollector(source.lifecycle))
    server = MetricsServer(registry, sampler, max(settings.interval_ms, 1) / 1000.0)
    await server.start(settings.host, settings.port)
    return server
