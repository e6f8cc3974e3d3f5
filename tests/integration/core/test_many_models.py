"""Many models on one server (issue #18): parallel start-up, on-demand loads, a memory budget with
LRU eviction, idle unload. The real server, driven by tritonclient; waits on events and log lines.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.integration.reliability.helpers import wait_for
from tests.support.models import write_python_model
from tests.support.server import RunningServer, start_server

HEAVY = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        # 56 MB of its own: one such model fits the test's 80 MiB budget, two never do, whatever
        # share of the (forked) interpreter's pages each worker is charged
        self.weights = np.ones(14_000_000, np.float32)

    def execute(self, requests):
        return [
            pb_utils.InferenceResponse(
                [pb_utils.Tensor("OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())]
            )
            for r in requests
        ]
"""

SLOW_INIT = """
import time
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        time.sleep(0.5)

    def execute(self, requests):
        return [
            pb_utils.InferenceResponse(
                [pb_utils.Tensor("OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())]
            )
            for r in requests
        ]
"""


def identity(server: RunningServer, model: str, value: float = 1.0) -> np.ndarray:
    client = httpclient.InferenceServerClient(server.http_url, network_timeout=120)
    data = np.full((1, 4), value, np.float32)
    tensor = httpclient.InferInput("INPUT0", [1, 4], "FP32")
    tensor.set_data_from_numpy(data)
    result = client.infer(model, [tensor]).as_numpy("OUTPUT0")
    assert result is not None
    return np.asarray(result)


def metric(server: RunningServer, name: str) -> float:
    import urllib.request

    text = urllib.request.urlopen(f"http://{server.metrics_url}/metrics", timeout=10).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def index(server: RunningServer) -> dict[str, dict[str, str]]:
    client = httpclient.InferenceServerClient(server.http_url)
    return {entry["name"]: entry for entry in client.get_model_repository_index()}


@pytest.mark.parametrize("threads", [1, 4])
def test_models_load_model_load_thread_count_at_a_time(tmp_path: Path, threads: int) -> None:
    for index_ in range(4):
        folder = write_python_model(tmp_path, f"slow_init_{index_}", "identity", dims=[4])
        (folder / "1" / "model.py").write_text(SLOW_INIT)
    with start_server(tmp_path, f"--model-load-thread-count={threads}") as server:
        events = re.findall(r"(loading: slow_init_\d|successfully loaded 'slow_init_\d)", server.log)
        first_done = next(i for i, event in enumerate(events) if event.startswith("successfully"))
        assert first_done == min(threads, 4)  # that many loads started before the first ended
        for index_ in range(4):
            answer = identity(server, f"slow_init_{index_}")
            np.testing.assert_array_equal(answer, np.ones((1, 4), np.float32))
        stats = httpclient.InferenceServerClient(server.http_url).get_inference_statistics("slow_init_0")
        (usage,) = stats["model_stats"][0]["memory_usage"]
        assert usage["type"] == "CPU" and int(usage["byte_size"]) > 1 << 20  # a worker's PSS
        assert metric(server, 'tritonctl_model_memory_bytes{device="cpu",model="slow_init_0"') > 1 << 20


def test_concurrent_first_requests_share_one_on_demand_load(tmp_path: Path) -> None:
    write_python_model(tmp_path, "lazy", "identity", dims=[4])
    with start_server(tmp_path, "--model-control-mode=explicit", "--model-load-on-demand=true") as server:
        client = httpclient.InferenceServerClient(server.http_url)
        assert not client.is_model_ready("lazy")
        assert index(server)["lazy"].get("state", "") == ""  # loadable, not loaded
        answers: list[object] = []
        start = threading.Barrier(8)

        def first_request(value: float) -> None:
            start.wait()
            try:
                answers.append(identity(server, "lazy", value)[0, 0])
            except InferenceServerException as exc:
                answers.append(exc)

        threads = [threading.Thread(target=first_request, args=(float(i),)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert sorted(answers) == [float(i) for i in range(8)]  # type: ignore[type-var]
        assert server.log.count("loaded 'lazy' on demand in") == 1
        assert client.is_model_ready("lazy") and index(server)["lazy"]["state"] == "READY"
        assert metric(server, "tritonctl_model_loads_on_demand_total") == 1


def test_without_on_demand_an_unloaded_model_is_still_refused(tmp_path: Path) -> None:
    write_python_model(tmp_path, "lazy", "identity", dims=[4])
    with (
        start_server(tmp_path, "--model-control-mode=explicit") as server,
        pytest.raises(InferenceServerException, match="unknown model"),
    ):
        identity(server, "lazy")


def test_requests_racing_evictions_never_fail(tmp_path: Path) -> None:
    """A budget that holds one model of ~56 MiB and two models asked for at once, step by step:
    every step evicts the resident one for the other while requests for it arrive."""
    for name in ("first", "second"):
        folder = write_python_model(tmp_path, name, "identity", dims=[4])
        (folder / "1" / "model.py").write_text(HEAVY)
    flags = ("--model-control-mode=explicit", "--model-memory-budget=cpu=80MiB", "--model-load-wait-secs=60")
    with start_server(tmp_path, *flags) as server:
        steps = 4
        barrier = threading.Barrier(2)
        failures: list[Exception] = []

        def client(offset: int) -> None:
            for step in range(steps):
                barrier.wait(120)
                model = ("first", "second")[(step + offset) % 2]
                try:
                    for _ in range(3):
                        identity(server, model)
                except InferenceServerException as exc:
                    failures.append(exc)

        threads = [threading.Thread(target=client, args=(offset,)) for offset in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        assert failures == []
        # The last eviction may still be unloading when the clients finish: wait for it to be
        # counted and for the two models to settle (one resident, one evicted), not a moment less.
        wait_for(
            lambda: metric(server, 'tritonctl_model_evictions_total{reason="budget"}') >= 1,
            60,
            "an eviction counted",
        )
        assert "to make room for" in server.log or "over budget after" in server.log

        def settled() -> bool:
            states = {name: entry.get("state", "") for name, entry in index(server).items()}
            return sorted(states.values()) == ["READY", "UNAVAILABLE"]

        wait_for(settled, 60, "one model resident and one evicted")
        assert metric(server, "tritonctl_model_memory_used_bytes") <= 80 << 20


def test_a_model_larger_than_the_budget_fails_its_load_clearly(tmp_path: Path) -> None:
    write_python_model(tmp_path, "huge", "identity", dims=[4])
    flags = ("--model-control-mode=explicit", "--model-memory-budget=cpu=1MiB")
    with (
        start_server(tmp_path, *flags) as server,
        pytest.raises(InferenceServerException, match="more than the whole --model-memory-budget"),
    ):
        identity(server, "huge")


def test_idle_models_unload_and_come_back_on_the_next_request(tmp_path: Path) -> None:
    for name in ("idle", "pinned"):
        write_python_model(tmp_path, name, "identity", dims=[4])
    flags = ("--model-idle-unload-secs=0.5", "--model-pin=pinned")
    with start_server(tmp_path, *flags) as server:
        wait_for(lambda: "unloaded (idle)" in index(server)["idle"].get("reason", ""), 30, "the idle unload")
        client = httpclient.InferenceServerClient(server.http_url)
        assert client.is_server_ready()  # an unloaded idle model does not make the server unready
        assert client.is_model_ready("pinned")
        np.testing.assert_array_equal(identity(server, "idle", 2.0), np.full((1, 4), 2.0, np.float32))
        assert metric(server, 'tritonctl_model_evictions_total{reason="idle"}') >= 1
