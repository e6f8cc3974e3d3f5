"""An HTTP client that disconnects while its request waits in the queue: the request never runs.

The models are gated (tests/support/events.py): the blocker's execution is held until the
abandoned request has been counted CANCELED, so that request can only have been in the queue."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.support.events import Gate, wait_pending, wait_until, write_gated_model
from tests.support.server import HOST, RunningServer, start_server

pytestmark = pytest.mark.integration

BATCHED = "slow_batched"  # DynamicBatcher
UNBATCHED = "slow_unbatched"  # DefaultScheduler


@pytest.fixture(scope="module")
def gates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Gate]:
    root = tmp_path_factory.mktemp("http_cancellation_gates")
    return {model: Gate(root / model) for model in (BATCHED, UNBATCHED)}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, gates: dict[str, Gate]) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("http_cancellation_repo")
    # One instance, one row per execution, held by its gate: a second request must wait in the queue.
    write_gated_model(repo, BATCHED, gates[BATCHED], max_batch_size=1, dims=[4], dynamic_batching=True)
    write_gated_model(repo, UNBATCHED, gates[UNBATCHED], max_batch_size=1, dims=[4])
    with start_server(repo) as running:
        try:
            yield running
        finally:  # a failed test may leave an execution held: let it end so the server stops at once
            for gate in gates.values():
                gate.open()


def _infer_body(value: float) -> bytes:
    return json.dumps(
        {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [value] * 4}]}
    ).encode()


def _stats(server: RunningServer, model: str) -> dict[str, Any]:
    client = httpclient.InferenceServerClient(server.http_url)
    stats: dict[str, Any] = client.get_inference_statistics(model)["model_stats"][0]
    return stats


@pytest.mark.parametrize("model", [BATCHED, UNBATCHED])
def test_disconnected_http_request_is_removed_from_the_queue(
    server: RunningServer, gates: dict[str, Gate], model: str
) -> None:
    blocker_answer: list[Any] = []

    def occupy() -> None:  # its own client: tritonclient.http's gevent client stays on one thread
        client = httpclient.InferenceServerClient(server.http_url)
        tensor = httpclient.InferInput("INPUT0", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.full((1, 4), 1.0, np.float32))
        blocker_answer.append(client.infer(model, [tensor]).as_numpy("OUTPUT0"))

    blocker = threading.Thread(target=occupy)
    blocker.start()
    gates[model].wait_started(1)  # the blocker is executing now, held

    body = _infer_body(2.0)
    with socket.create_connection((HOST, server.http_port), timeout=10) as abandoned:
        abandoned.sendall(
            f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {HOST}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        wait_pending(server, model, 2)  # parsed and queued behind the blocker
    # The socket is closed while the blocker is held; its request must leave the queue, counted
    # CANCELED now (one that stayed queued would run, or be counted, only after the blocker).
    wait_until(
        lambda: _stats(server, model)["inference_stats"]["fail"]["count"] == 1,
        "the abandoned request to be withdrawn",
    )
    gates[model].open()
    blocker.join(timeout=30)
    assert blocker_answer and np.array_equal(blocker_answer[0], np.full((1, 4), 1.0, np.float32))

    stats = _stats(server, model)
    assert (stats["execution_count"], stats["inference_count"]) == (1, 1), stats
    assert stats["inference_stats"]["success"]["count"] == 1
    assert stats["inference_stats"]["fail"]["count"] == 1  # counted CANCELED

    # The server keeps serving; the request after the blocker is this one, not the abandoned one.
    client = httpclient.InferenceServerClient(server.http_url)
    tensor = httpclient.InferInput("INPUT0", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.full((1, 4), 3.0, np.float32))
    answer = client.infer(model, [tensor]).as_numpy("OUTPUT0")
    assert np.array_equal(answer, np.full((1, 4), 3.0, np.float32))
    stats = _stats(server, model)
    assert (stats["execution_count"], stats["inference_count"]) == (2, 2)
