"""The response cache end to end (--cache-config local,size=N), driven by unchanged tritonclient.

A hit answers without executing (execution_count and compute counts stay), counts in
`cache_hit` and in nv_cache_num_hits_per_model; answers are exact whatever the client, and
classification or error responses never spoil what is stored.
"""

from __future__ import annotations

import asyncio
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio
from tritonclient.utils import InferenceServerException

from tests.support.models import write_one_step_ensemble, write_python_model, write_python_source
from tests.support.server import RunningServer, start_server

CACHE = "\nresponse_cache { enable: true }\n"


def _enable_cache(model_dir: Path) -> None:
    config = model_dir / "config.pbtxt"
    config.write_text(config.read_text() + CACHE)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("cache-repo")
    _enable_cache(write_python_model(repo, "cached", "identity", max_batch_size=8, dims=[4]))
    write_python_model(repo, "plain", "identity", max_batch_size=8, dims=[4])
    _enable_cache(write_python_model(repo, "failing", "execute_raises", mode="per_request", dims=[4]))
    write_one_step_ensemble(repo, "ens", "plain", [4], extra=CACHE)
    write_one_step_ensemble(repo, "ens_steps", "cached", [4])  # no cache of its own; its step's has one
    with start_server(repo, "--cache-config=local,size=1048576") as running:
        yield running


def _stats(server: RunningServer, model: str) -> dict[str, Any]:
    client = httpclient.InferenceServerClient(server.http_url)
    stats: dict[str, Any] = client.get_inference_statistics(model)["model_stats"][0]
    return stats


def _counts(server: RunningServer, model: str) -> dict[str, int]:
    stats = _stats(server, model)
    inference = stats["inference_stats"]
    return {
        "success": inference["success"]["count"],
        "hit": inference["cache_hit"]["count"],
        "miss": inference["cache_miss"]["count"],
        "compute": inference["compute_infer"]["count"],
        "queue": inference["queue"]["count"],
        "executions": stats["execution_count"],
        "inferences": stats["inference_count"],
    }


def _http_infer(server: RunningServer, model: str, data: np.ndarray, name: str = "INPUT0", **kw: Any) -> Any:
    client = httpclient.InferenceServerClient(server.http_url)
    tensor = httpclient.InferInput(name, list(data.shape), "FP32")
    tensor.set_data_from_numpy(data, binary_data=kw.pop("binary", True))
    return client.infer(model, [tensor], **kw)


def _metric(server: RunningServer, name: str, model: str) -> float | None:
    with urllib.request.urlopen(f"http://{server.metrics_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.search(rf'^{name}{{model="{model}",version="1"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else None


def test_a_repeated_request_is_answered_from_the_cache_without_executing(server: RunningServer) -> None:
    data = np.array([[1.5, 2.5, 3.5, 4.5]], dtype=np.float32)
    before = _counts(server, "cached")
    first = _http_infer(server, "cached", data, request_id="one")
    second = _http_infer(server, "cached", data, request_id="two", binary=False)
    np.testing.assert_array_equal(first.as_numpy("OUTPUT0"), data)
    np.testing.assert_array_equal(second.as_numpy("OUTPUT0"), data)
    assert second.get_response()["id"] == "two"
    after = _counts(server, "cached")
    delta = {key: after[key] - before[key] for key in after}
    assert delta == {
        "success": 2,
        "hit": 1,
        "miss": 1,
        "compute": 1,
        "queue": 2,
        "executions": 1,
        "inferences": 1,
    }
    # A different input is a miss with its own answer, never the stored one.
    other = data + 1
    np.testing.assert_array_equal(_http_infer(server, "cached", other).as_numpy("OUTPUT0"), other)
    assert _counts(server, "cached")["executions"] == after["executions"] + 1


def test_grpc_clients_hit_what_http_stored(server: RunningServer) -> None:
    data = np.array([[7.0, 8.0, 9.0, 10.0]], dtype=np.float32)
    _http_infer(server, "cached", data)
    before = _counts(server, "cached")
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
    tensor.set_data_from_numpy(data)
    result = client.infer("cached", [tensor], request_id="grpc-hit")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)
    assert result.get_response().id == "grpc-hit"
    after = _counts(server, "cached")
    assert (after["hit"] - before["hit"], after["executions"] - before["executions"]) == (1, 0)


def test_concurrent_identical_requests(server: RunningServer) -> None:
    data = np.array([[0.25, 0.5, 0.75, 1.0]], dtype=np.float32)
    count = 24

    async def run_http() -> list[np.ndarray]:
        client = httpaio.InferenceServerClient(server.http_url)
        try:

            async def one(index: int) -> np.ndarray:
                tensor = httpaio.InferInput("INPUT0", [1, 4], "FP32")
                tensor.set_data_from_numpy(data)
                result = await client.infer("cached", [tensor], request_id=str(index))
                assert result.get_response()["id"] == str(index)
                answer: np.ndarray = result.as_numpy("OUTPUT0")
                return answer

            return await asyncio.gather(*(one(i) for i in range(count)))
        finally:
            await client.close()

    async def run_grpc() -> list[np.ndarray]:
        client = grpcaio.InferenceServerClient(server.grpc_url)
        try:

            async def one(index: int) -> np.ndarray:
                tensor = grpcaio.InferInput("INPUT0", [1, 4], "FP32")
                tensor.set_data_from_numpy(data)
                result = await client.infer("cached", [tensor], request_id=str(index))
                answer: np.ndarray = result.as_numpy("OUTPUT0")
                return answer

            return await asyncio.gather(*(one(i) for i in range(count)))
        finally:
            await client.close()

    before = _counts(server, "cached")
    answers = asyncio.run(run_http()) + asyncio.run(run_grpc())
    for answer in answers:
        np.testing.assert_array_equal(answer, data)
    after = _counts(server, "cached")
    delta = {key: after[key] - before[key] for key in after}
    assert delta["success"] == delta["hit"] + delta["miss"] == 2 * count
    assert delta["miss"] >= 1 and delta["hit"] >= count  # the gRPC round at least finds it stored
    assert delta["executions"] == delta["miss"] == delta["compute"]  # each miss executed once


def test_classification_does_not_spoil_the_stored_answer(server: RunningServer) -> None:
    data = np.array([[0.1, 0.9, 0.5, 0.2]], dtype=np.float32)
    top = _http_infer(
        server, "cached", data, outputs=[httpclient.InferRequestedOutput("OUTPUT0", class_count=2)]
    )
    assert [item.decode().split(":")[1] for item in top.as_numpy("OUTPUT0")[0]] == ["1", "2"]
    plain = _http_infer(server, "cached", data)  # a hit: the raw tensor, not the labels
    np.testing.assert_array_equal(plain.as_numpy("OUTPUT0"), data)
    again = _http_infer(
        server, "cached", data, outputs=[httpclient.InferRequestedOutput("OUTPUT0", class_count=1)]
    )
    assert again.as_numpy("OUTPUT0").shape == (1, 1)


def test_error_responses_are_not_cached(server: RunningServer) -> None:
    bad = np.array([[-1.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    before = _counts(server, "failing")
    for _ in range(2):
        with pytest.raises(InferenceServerException, match="execute failed on purpose"):
            _http_infer(server, "failing", bad)
    after = _counts(server, "failing")
    assert (after["executions"] - before["executions"], after["hit"] - before["hit"]) == (2, 0)


def test_an_ensemble_is_cached_at_the_top(server: RunningServer) -> None:
    data = np.array([[3.0, 1.0, 4.0, 1.0]], dtype=np.float32)
    before_plain = _counts(server, "plain")
    for _ in range(3):
        np.testing.assert_array_equal(_http_infer(server, "ens", data, name="IN").as_numpy("OUT"), data)
    assert _counts(server, "plain")["executions"] - before_plain["executions"] == 1
    ens = _counts(server, "ens")
    assert (ens["hit"], ens["miss"]) == (2, 1)


def test_an_ensemble_step_hits_its_models_cache(server: RunningServer) -> None:
    data = np.array([[2.0, 7.0, 1.0, 8.0]], dtype=np.float32)
    before = _counts(server, "cached")
    for _ in range(3):
        np.testing.assert_array_equal(_http_infer(server, "ens_steps", data, name="IN").as_numpy("OUT"), data)
    after = _counts(server, "cached")
    delta = {key: after[key] - before[key] for key in after}
    assert (delta["executions"], delta["miss"], delta["hit"]) == (1, 1, 2)
    ens = _counts(server, "ens_steps")
    assert (ens["success"], ens["hit"], ens["miss"]) == (3, 0, 0)


def test_models_without_a_cache_never_touch_it(server: RunningServer) -> None:
    data = np.array([[5.0, 5.0, 5.0, 5.0]], dtype=np.float32)
    before = _counts(server, "plain")
    for _ in range(2):
        _http_infer(server, "plain", data)
    after = _counts(server, "plain")
    assert (after["executions"] - before["executions"], after["hit"], after["miss"]) == (2, 0, 0)


def test_cache_metrics_per_model(server: RunningServer) -> None:
    data = np.array([[9.0, 9.0, 9.0, 9.0]], dtype=np.float32)
    for _ in range(2):
        _http_infer(server, "cached", data)
    counts = _counts(server, "cached")
    assert _metric(server, "nv_cache_num_hits_per_model", "cached") == counts["hit"]
    assert _metric(server, "nv_cache_num_misses_per_model", "cached") == counts["miss"]
    assert (_metric(server, "nv_cache_hit_duration_per_model", "cached") or 0) >= 0
    assert _metric(server, "nv_cache_miss_duration_per_model", "cached") is not None
    # Executions only: a hit is a success but no inference (Triton's nv_inference_count).
    assert _metric(server, "nv_inference_count", "cached") == counts["inferences"]
    assert _metric(server, "nv_inference_request_success", "cached") == counts["success"]
    assert _metric(server, "nv_cache_num_hits_per_model", "plain") is None


DOUBLE = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", data * 2)]))
        return responses
"""


def test_a_reloaded_model_never_answers_from_its_previous_load(tmp_path: Path) -> None:
    model_dir = write_python_model(tmp_path, "swapped", "identity", max_batch_size=8, dims=[4])
    _enable_cache(model_dir)
    data = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    with start_server(
        tmp_path, "--model-control-mode=explicit", "--load-model=swapped", "--cache-config=local,size=65536"
    ) as running:
        for _ in range(2):
            np.testing.assert_array_equal(_http_infer(running, "swapped", data).as_numpy("OUTPUT0"), data)
        assert _counts(running, "swapped")["hit"] == 1
        write_python_source(model_dir, DOUBLE)  # new code, same config: the load starts new instances
        httpclient.InferenceServerClient(running.http_url).load_model("swapped")
        np.testing.assert_array_equal(_http_infer(running, "swapped", data).as_numpy("OUTPUT0"), data * 2)
