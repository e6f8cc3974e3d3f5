"""Requests with different lengths on a variable dim are batched only with their own shape."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.support.models import write_onnx_model, write_python_model, write_python_source
from tests.support.server import RunningServer, start_server

pytestmark = pytest.mark.integration

ONNX_MODEL = "variable_length_onnx"  # concatenates a batch's inputs: mixed lengths would be wrong
CHECKED_MODEL = "variable_length_checked"  # sees each batch the batcher forms and checks its shapes
LENGTHS = (1, 2, 3, 5, 8)
REQUESTS = 40

# An identity model that fails a whole execution whose requests do not all share one shape, so a
# mixed batch formed by the batcher shows up as errors (the ONNX backend would hide it by running
# such a batch request by request).
_SHAPE_CHECKED_SOURCE = """\
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        time.sleep(0.02)  # let the queue fill, so every batch has lengths to choose from
        arrays = [pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy() for r in requests]
        shapes = {a.shape[1:] for a in arrays}
        if len(shapes) > 1:
            raise pb_utils.TritonModelException(f"mixed shapes in one batch: {sorted(shapes)}")
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", a)]) for a in arrays]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("shape_grouping_repo")
    # Requests of every length pile up within the delay, even on a busy machine.
    batching = {"max_queue_delay_microseconds": 200_000}
    write_onnx_model(repo, ONNX_MODEL, "identity", max_batch_size=8, dims=[-1], dynamic_batching=batching)
    checked = write_python_model(
        repo, CHECKED_MODEL, "identity", max_batch_size=8, dims=[-1], dynamic_batching=batching
    )
    write_python_source(checked, _SHAPE_CHECKED_SOURCE)
    write_python_model(repo, "empty_batcher", "identity", max_batch_size=8, dims=[-1], dynamic_batching=True)
    with start_server(repo) as running:
        yield running


@pytest.mark.parametrize("model", [ONNX_MODEL, CHECKED_MODEL])
def test_each_request_gets_its_own_answer_whatever_its_length(server: RunningServer, model: str) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    done: queue.Queue[tuple[int, Any]] = queue.Queue()
    sent: dict[int, np.ndarray[Any, Any]] = {}
    for index in range(REQUESTS):
        # Runs of one length, so neighbours can batch; a batch must still stop at each run boundary.
        length = LENGTHS[index * len(LENGTHS) // REQUESTS]
        data = (np.arange(length, dtype=np.float32) + 100.0 * index).reshape(1, length)
        sent[index] = data
        tensor = grpcclient.InferInput("INPUT0", [1, length], "FP32")
        tensor.set_data_from_numpy(data)

        def finished(result: Any, error: Any, index: int = index) -> None:
            done.put((index, error if error is not None else result.as_numpy("OUTPUT0")))

        client.async_infer(model, [tensor], finished)
    answers = dict(done.get(timeout=60) for _ in range(REQUESTS))
    for index, data in sent.items():
        answer = answers[index]
        assert not isinstance(answer, InferenceServerException), answer
        assert answer.shape == data.shape and np.array_equal(answer, data), (index, answer, data)

    stats = client.get_inference_statistics(model).model_stats[0]
    assert stats.inference_count == REQUESTS
    # Same-length requests did share executions; otherwise this test proves nothing about batching.
    assert stats.execution_count < REQUESTS, stats.execution_count


def test_served_config_completes_an_empty_dynamic_batching(server: RunningServer) -> None:
    config = httpclient.InferenceServerClient(server.http_url).get_model_config("empty_batcher")
    assert config["dynamic_batching"]["preferred_batch_size"] == [8]
