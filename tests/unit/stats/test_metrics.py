"""server/metrics.py: Triton's metric names and labels, read from ModelStats at scrape time."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from server.core.stats import ModelStats, StatsEntry
from server.metrics import MetricsSettings, SystemSample, TritonCollector, render, start_metrics


def scrape_text(entries: list[StatsEntry], system: SystemSample | None = None) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TritonCollector(lambda: entries, system or SystemSample()))
    return render(registry).decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(family.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def busy_stats() -> ModelStats:
    stats = ModelStats()
    for _ in range(3):
        stats.record_success(
            request_ns=5_000,
            queue_ns=1_000,
            compute_input_ns=100,
            compute_infer_ns=2_000,
            compute_output_ns=300,
        )
    stats.record_execution(batch_size=3, compute_input_ns=100, compute_infer_ns=2_000, compute_output_ns=300)
    stats.record_failure(request_ns=10, reason="REJECTED")
    stats.record_load(1.5)
    return stats


def test_model_counters_use_tritons_names_labels_and_units() -> None:
    text = scrape_text([StatsEntry("mlp", "1", busy_stats(), pending=2)])
    assert "# TYPE nv_inference_count counter" in text
    assert 'nv_inference_count{model="mlp",version="1"} 3\n' in text  # no _total, no .0
    found = samples(text)
    key = (("model", "mlp"), ("version", "1"))
    assert found[("nv_inference_request_success", key)] == 3
    assert found[("nv_inference_count", key)] == 3
    assert found[("nv_inference_exec_count", key)] == 1
    assert found[("nv_inference_request_duration_us", key)] == 15
    assert found[("nv_inference_queue_duration_us", key)] == 3
    assert found[("nv_inference_compute_infer_duration_us", key)] == 6
    assert found[("nv_inference_pending_request_count", key)] == 2
    assert found[("nv_model_load_duration_secs", key)] == 1.5
    rejected = (("model", "mlp"), ("reason", "REJECTED"), ("version", "1"))
    backend = (("model", "mlp"), ("reason", "BACKEND"), ("version", "1"))
    assert found[("nv_inference_request_failure", rejected)] == 1
    assert found[("nv_inference_request_failure", backend)] == 0


def test_scrape_reads_the_live_counters_each_time() -> None:
    stats = ModelStats()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TritonCollector(lambda: [StatsEntry("m", "2", stats, 0)], SystemSample()))
    assert 'nv_inference_exec_count{model="m",version="2"} 0' in render(registry).decode()
    stats.record_execution(batch_size=4, compute_input_ns=0, compute_infer_ns=0, compute_output_ns=0)
    assert 'nv_inference_exec_count{model="m",version="2"} 1' in render(registry).decode()


def test_cpu_and_gpu_gauges_appear_only_when_sampled() -> None:
    assert "nv_gpu" not in scrape_text([]) and "nv_cpu" not in scrape_text([])
    from server.metrics import GpuSample

    system = SystemSample(cpu_utilization=0.25, cpu_memory_total=100, cpu_memory_used=40)
    system.gpus = [GpuSample("GPU-abc", 0.5, 1000, 10, 70.5)]
    found = samples(scrape_text([], system))
    assert found[("nv_cpu_utilization", ())] == 0.25
    assert found[("nv_cpu_memory_used_bytes", ())] == 40
    assert found[("nv_gpu_power_usage", (("gpu_uuid", "GPU-abc"),))] == 70.5
    assert found[("nv_gpu_memory_total_bytes", (("gpu_uuid", "GPU-abc"),))] == 1000


def test_metrics_endpoint_serves_and_stops() -> None:
    async def scenario() -> None:
        stats = busy_stats()
        settings = MetricsSettings(port=0, allow_gpu_metrics=False, interval_ms=50)
        server = await start_metrics(lambda: [StatsEntry("m", "1", stats, 0)], settings)
        assert server is not None
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
                response = await client.get("/metrics")
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
                found = samples(response.text)
                assert found[("nv_inference_exec_count", (("model", "m"), ("version", "1")))] == 1
                assert 0.0 <= found[("nv_cpu_utilization", ())] <= 1.0
                assert found[("nv_cpu_memory_total_bytes", ())] > 0
                assert (await client.get("/other")).status_code == 404
        finally:
            await server.stop()

    asyncio.run(asyncio.wait_for(scenario(), timeout=20))


def test_disabled_metrics_start_nothing() -> None:
    async def scenario() -> None:
        assert await start_metrics(lambda: [], MetricsSettings(allow_metrics=False)) is None

    asyncio.run(scenario())


def test_settings_come_from_server_options_with_tritons_defaults() -> None:
    class Options:
        host = "0.0.0.0"
        metrics_address = None
        metrics_port = 9102
        allow_metrics = True
        metrics_interval_ms = 500

    settings = MetricsSettings.from_options(Options())
    assert (settings.host, settings.port, settings.interval_ms) == ("0.0.0.0", 9102, 500)
    assert settings.allow_gpu_metrics is True
