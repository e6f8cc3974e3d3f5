"""An HTTP client that disconnects while its request waits in the queue: the request never runs."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.support.models import write_python_model
from tests.support.server import HOST, RunningServer, start_server

pytestmark = pytest.mark.integration

BATCHED = "slow_batched"  # DynamicBatcher
UNBATCHED = "slow_unbatched"  # DefaultScheduler


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("http_cancellation_repo")
    # One instance, one row per execution, 800 ms each: a second request must wait in the queue.
    write_python_model(repo, BATCHED, "slow", delay_ms=800, max_batch_size=1, dims=[4], dynamic_batching=True)
    write_python_model(repo, UNBATCHED, "slow", delay_ms=800, max_batch_size=1, dims=[4])
    with start_server(repo) as running:
        yield running


def _infer_body(value: float) -> bytes:
    return json.dumps(
        {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [value] * 4}]}
    ).encode()


def _stats(server: RunningServer, model: str) -> dict[str, Any]:
    client = httpclient.InferenceServerClient(server.http_url)
    stats: dict[str, Any] = client.get_inference_statistics(model)["model_stats"][0]
    return stats


@pytest.mark.parametrize("model", [BATCHED, UNBATCHED])
def test_disconnected_http_request_is_removed_from_the_queue(server: RunningServer, model: str) -> None:
    blocker_answer: list[Any] = []

    def occupy() -> None:  # its own client: tritonclient.http's gevent client stays on one thread
        client = httpclient.InferenceServerClient(server.http_url)
        tensor = httpclient.InferInput("INPUT0", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.full((1, 4), 1.0, np.float32))
        blocker_answer.append(client.infer(model, [tensor]).as_numpy("OUTPUT0"))

    blocker = threading.Thread(target=occupy)
    blocker.start()
    time.sleep(0.25)  # the blocker is executing now (800 ms)

    body = _infer_body(2.0)
    with socket.create_connection((HOST, server.http_port), timeout=10) as abandoned:
        abandoned.sendall(
            f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {HOST}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        time.sleep(0.2)  # parsed and queued behind the blocker
    # The socket is closed while the blocker still runs; its request must leave the queue.
    blocker.join(timeout=30)
    assert blocker_answer and np.array_equal(blocker_answer[0], np.full((1, 4), 1.0, np.float32))
    time.sleep(1.2)  # long enough for the abandoned request to have run, had it stayed queued

    stats = _stats(server, model)
    assert (stats["execution_count"], stats["inference_count"]) == (1, 1), stats
    assert stats["inference_stats"]["success"]["count"] == 1
    assert stats["inference_stats"]["fail"]["count"] == 1  # counted CANCELED

    # The server keeps serving.
    client = httpclient.InferenceServerClient(server.http_url)
    tensor = httpclient.InferInput("INPUT0", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.full((1, 4), 3.0, np.float32))
    answer = client.infer(model, [tensor]).as_numpy("OUTPUT0")
    assert np.array_equal(answer, np.full((1, 4), 3.0, np.float32))
    stats = _stats(server, model)
    assert (stats["execution_count"], stats["inference_count"]) == (2, 2)
