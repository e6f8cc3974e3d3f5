"""Custom metrics (pb_utils.MetricFamily counter, gauge, histogram) exported on the metrics port and
merged across instances (two worker processes, and a thread-mode instance); pb_utils.Logger lines
in the server log with the model's name; request.correlation_id(), flags() and timeout()."""

from __future__ import annotations

import queue
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from prometheus_client.parser import text_string_to_metric_families

from tests.support.events import wait_until
from tests.support.server import RunningServer, start_server
from tests.support.triton_models import write_triton_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("metrics_repo")
    write_triton_model(repo, "metrics_two", "metrics", instance_count=2)
    write_triton_model(repo, "metrics_thread", "metrics", parameters={"TRITONCTL_INSTANCE_MODE": "thread"})
    with start_server(repo, "--log-verbose=1", timeout=120) as running:
        yield running


def _scrape(server: RunningServer) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    with urllib.request.urlopen(f"http://{server.metrics_url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def _send(client: grpcclient.InferenceServerClient, model: str, value: int, request_id: str = "") -> None:
    tensor = grpcclient.InferInput("IN", [1], "INT32")
    tensor.set_data_from_numpy(np.array([value], np.int32))
    client.infer(model, [tensor], request_id=request_id)


def test_counters_and_histograms_sum_over_instances_and_gauges_show_the_last_write(
    server: RunningServer,
) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    values = [3, 12, 1, 5, 7, 20]
    # concurrent requests spread over both worker processes
    answered: queue.Queue[object] = queue.Queue()
    for value in values:
        tensor = grpcclient.InferInput("IN", [1], "INT32")
        tensor.set_data_from_numpy(np.array([value], np.int32))
        client.async_infer("metrics_two", [tensor], callback=lambda result, error: answered.put(error))
    assert [answered.get(timeout=30) for _ in values] == [None] * len(values)
    _send(client, "metrics_two", 4)  # after the others: the gauge's last write
    _send(client, "metrics_thread", 2)
    samples = _scrape(server)
    labels = (("flavour", "toy"), ("model", "metrics_two"))
    assert samples["toy_requests_total"][labels] == len(values) + 1
    assert samples["toy_last_value"][labels] == 4
    histogram = {
        key: value for key, value in samples["toy_value_bucket"].items() if ("model", "metrics_two") in key
    }
    assert histogram[(*labels[:1], ("le", "1"), labels[1])] == 1  # 1
    assert histogram[(*labels[:1], ("le", "10"), labels[1])] == 5  # 1 3 4 5 7
    assert histogram[(*labels[:1], ("le", "+Inf"), labels[1])] == 7
    assert samples["toy_value_sum"][labels] == sum(values) + 4
    assert samples["toy_value_count"][labels] == 7
    thread_labels = (("flavour", "toy"), ("model", "metrics_thread"))
    assert samples["toy_requests_total"][thread_labels] == 1
    assert samples["toy_last_value"][thread_labels] == 2
    assert "nv_inference_request_success_total" in samples  # beside Triton's own metrics


def test_logger_lines_name_the_model_and_misuse_raises(server: RunningServer) -> None:
    log = server.log
    for model in ("metrics_two", "metrics_thread"):
        assert f"model '{model}'] a warning from initialize" in log
        assert f"model '{model}'] an error from initialize" in log
        assert f"model '{model}'] a verbose line from initialize" in log  # --log-verbose=1
    expected = (
        "['TritonModelException', 'TritonModelException', 'TritonModelException', 'TritonModelException']"
    )
    assert f"metric misuse errors: {expected}" in log


def test_request_accessors(server: RunningServer) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("IN", [1], "INT32")
    tensor.set_data_from_numpy(np.array([1], np.int32))
    client.infer("metrics_two", [tensor], request_id="acc-1", timeout=5_000_000)
    assert "request acc-1 correlation 0 flags 0 timeout 5000000" in server.log


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_a_models_own_is_ready_decides_its_readiness(
    tmp_path_factory: pytest.TempPathFactory, mode: str
) -> None:
    repo = tmp_path_factory.mktemp(f"ready_repo_{mode}")
    flag = tmp_path_factory.mktemp("flags") / "not_ready"
    parameters = {"NOT_READY_FILE": str(flag), "TRITONCTL_INSTANCE_MODE": mode}
    write_triton_model(repo, "gated", "ready_flag", parameters=parameters)
    with start_server(repo, timeout=120) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        assert client.is_model_ready("gated")
        flag.touch()
        wait_until(lambda: not client.is_model_ready("gated"), "is_ready() False to make the model unready")
        assert server.get("/v2/models/gated/ready")[0] == 400
        flag.unlink()
        wait_until(lambda: client.is_model_ready("gated"), "the model to be ready again")
