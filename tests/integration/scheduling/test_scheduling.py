"""Dynamic batching, queue policies, priorities, cancellation, warmup and metrics on the real server.

The queueing tests hold their model's executions with a gate (conftest.py): each waits until a
request is executing or queued, and releases executions one at a time where order matters."""

from __future__ import annotations

import queue
import time
import urllib.request
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from tests.support.events import Gate, wait_pending, wait_until
from tests.support.server import RunningServer

pytestmark = pytest.mark.integration


def grpc_input(value: float) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.full((1, 4), value, np.float32))
    return tensor


class Calls:
    """Fire gRPC requests without waiting; collect (tag, answer-or-error) in completion order."""

    def __init__(self, server: RunningServer) -> None:
        self.client = grpcclient.InferenceServerClient(server.grpc_url)
        self.done: queue.Queue[tuple[str, Any]] = queue.Queue()

    def send(self, model: str, tag: str, value: float = 0.0, **options: Any) -> None:
        def finished(result: Any, error: Any) -> None:
            self.done.put((tag, error if error is not None else result.as_numpy("OUTPUT0")))

        self.client.async_infer(model, [grpc_input(value)], finished, **options)

    def collect(self, count: int, timeout: float = 30.0) -> list[tuple[str, Any]]:
        return [self.done.get(timeout=timeout) for _ in range(count)]

    def one_by_one(self, gate: Gate, count: int) -> list[tuple[str, Any]]:
        """Let the held executions finish one at a time: answers in the order they executed."""
        finished: list[tuple[str, Any]] = []
        for allowed in range(1, count + 1):
            gate.allow(allowed)
            finished += self.collect(1)
        return finished


def model_stats(server: RunningServer, model: str) -> Any:
    return grpcclient.InferenceServerClient(server.grpc_url).get_inference_statistics(model).model_stats[0]


def scrape(server: RunningServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://{server.metrics_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name.removesuffix("_total"), tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(server: RunningServer) -> None:
    calls = Calls(server)
    for index in range(48):
        calls.send("batched", str(index), value=float(index))
    answers = dict(calls.collect(48))
    for index in range(48):
        answer = answers[str(index)]
        assert not isinstance(answer, InferenceServerException), answer
        assert np.array_equal(answer, np.full((1, 4), index, np.float32))
    stats = model_stats(server, "batched")
    assert stats.inference_count == 48
    assert stats.execution_count <= 48 // 3  # batched, not one request per execution
    sizes = {batch.batch_size: batch.compute_infer.count for batch in stats.batch_stats}
    rows_in_preferred = sum(size * count for size, count in sizes.items() if size in (4, 8))
    assert rows_in_preferred >= 48 // 2, sizes
    assert stats.inference_stats.queue.count == 48


def test_full_queue_is_unavailable_and_the_model_recovers(
    server: RunningServer, gates: dict[str, Gate]
) -> None:
    calls = Calls(server)
    calls.send("tiny_queue", "running")
    gates["tiny_queue"].wait_started(1)  # it is executing now, held
    calls.send("tiny_queue", "queued")
    wait_pending(server, "tiny_queue", 2)  # and the queue's one place is taken
    with pytest.raises(InferenceServerException) as refused:  # a queued one would time out instead
        calls.client.infer("tiny_queue", [grpc_input(1.0)], client_timeout=10)
    assert refused.value.status() == "StatusCode.UNAVAILABLE"
    assert "Exceeds maximum queue size" in refused.value.message()
    http = httpclient.InferenceServerClient(server.http_url, network_timeout=10)
    tensor = httpclient.InferInput("INPUT0", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 4), np.float32))
    with pytest.raises(InferenceServerException) as over_http:
        http.infer("tiny_queue", [tensor])
    assert over_http.value.status() == "503"
    assert "Exceeds maximum queue size" in over_http.value.message()
    gates["tiny_queue"].open()
    outcomes = dict(calls.collect(2))
    assert not any(isinstance(v, InferenceServerException) for v in outcomes.values()), outcomes
    result = calls.client.infer("tiny_queue", [grpc_input(2.0)])  # room again
    assert np.array_equal(result.as_numpy("OUTPUT0"), np.full((1, 4), 2.0, np.float32))


def test_higher_priority_requests_are_served_first(server: RunningServer, gates: dict[str, Gate]) -> None:
    gate = gates["prioritized"]
    calls = Calls(server)
    calls.send("prioritized", "blocker")
    gate.wait_started(1)
    calls.send("prioritized", "low-1", priority=2)
    wait_pending(server, "prioritized", 2)  # queued in this order behind the held blocker
    calls.send("prioritized", "low-2")  # default level 2
    wait_pending(server, "prioritized", 3)
    calls.send("prioritized", "high", priority=1)
    wait_pending(server, "prioritized", 4)
    order = [tag for tag, _ in calls.one_by_one(gate, 4)]
    assert order == ["blocker", "high", "low-1", "low-2"]


def test_timeout_reject_answers_unavailable(server: RunningServer, gates: dict[str, Gate]) -> None:
    calls = Calls(server)
    calls.send("reject_late", "blocker")
    gates["reject_late"].wait_started(1)  # held until the late one is answered
    started = time.monotonic()
    with pytest.raises(InferenceServerException) as late:
        calls.client.infer("reject_late", [grpc_input(1.0)], client_timeout=10)
    assert time.monotonic() - started < 0.45  # rejected at its timeout, not after the blocker
    gates["reject_late"].open()
    assert late.value.status() == "StatusCode.UNAVAILABLE"
    assert "Request timeout expired" in late.value.message()
    assert [tag for tag, _ in calls.collect(1)] == ["blocker"]
    key = (("model", "reject_late"), ("reason", "REJECTED"), ("version", "1"))
    assert scrape(server)[("nv_inference_request_failure", key)] == 1


def test_timeout_delay_moves_a_late_request_behind_the_others(
    server: RunningServer, gates: dict[str, Gate]
) -> None:
    gate = gates["delay_late"]
    calls = Calls(server)
    calls.send("delay_late", "blocker")
    gate.wait_started(1)
    calls.send("delay_late", "impatient", timeout=1)  # µs; times out at once, while the blocker is held
    wait_pending(server, "delay_late", 2)
    calls.send("delay_late", "patient")  # queued after the impatient one
    wait_pending(server, "delay_late", 3)
    results = calls.one_by_one(gate, 3)
    assert [tag for tag, _ in results] == ["blocker", "patient", "impatient"]
    assert not any(isinstance(answer, InferenceServerException) for _, answer in results)


def test_a_request_whose_deadline_passes_leaves_the_queue(
    server: RunningServer, gates: dict[str, Gate]
) -> None:
    calls = Calls(server)
    before = scrape(server)
    calls.send("cancellable", "blocker")
    gates["cancellable"].wait_started(1)  # held: the next request can only wait in the queue
    with pytest.raises(InferenceServerException) as gone:
        calls.client.infer("cancellable", [grpc_input(1.0)], client_timeout=0.2)
    assert "Deadline" in gone.value.message() or gone.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    # Counted CANCELED while the blocker is still held: it left the queue (one that stayed would
    # be counted only after running).
    wait_until(
        lambda: model_stats(server, "cancellable").inference_stats.fail.count == 1,
        "the expired request to be withdrawn",
    )
    gates["cancellable"].open()
    calls.collect(1)
    stats = model_stats(server, "cancellable")
    assert (stats.execution_count, stats.inference_count) == (1, 1)  # the cancelled one never ran
    after = scrape(server)
    labels = (("model", "cancellable"), ("reason", "CANCELED"), ("version", "1"))
    canceled = ("nv_inference_request_failure", labels)
    assert after[canceled] - before.get(canceled, 0) == 1


def test_metrics_counters_move_by_exactly_the_requests_sent(server: RunningServer) -> None:
    labels = (("model", "batched"), ("version", "1"))
    before = scrape(server)
    calls = Calls(server)
    for index in range(7):
        calls.send("batched", str(index), value=float(index))
    calls.collect(7)
    after = scrape(server)

    def delta(name: str) -> float:
        return after[(name, labels)] - before.get((name, labels), 0.0)

    assert delta("nv_inference_request_success") == 7
    assert delta("nv_inference_count") == 7
    assert 1 <= delta("nv_inference_exec_count") <= 7
    assert delta("nv_inference_request_duration_us") > 0
    assert delta("nv_inference_compute_infer_duration_us") > 0
    assert after[("nv_inference_pending_request_count", labels)] == 0
    assert after[("nv_model_load_duration_secs", labels)] > 0
    assert 0.0 <= after[("nv_cpu_utilization", ())] <= 1.0
    assert after[("nv_cpu_memory_total_bytes", ())] > after[("nv_cpu_memory_used_bytes", ())] > 0


def test_warmup_runs_before_ready_and_a_failing_warmup_fails_the_load(server: RunningServer) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    assert client.is_model_ready("warmed")
    assert client.get_inference_statistics("warmed")["model_stats"][0]["execution_count"] == 0
    assert not client.is_model_ready("warmup_fails")
    index = {entry["name"]: entry for entry in client.get_model_repository_index()}
    assert "warmup" in index["warmup_fails"].get("reason", "")
