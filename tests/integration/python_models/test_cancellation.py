"""request.is_cancelled() inside the model when the client goes away: HTTP connection closed, gRPC
call cancelled, gRPC stream cancelled, the request's timeout passed; in the process, thread and
inline modes where they apply. The models log what they saw (pb_utils.Logger), the test waits for
those lines in the server log."""

from __future__ import annotations

import json
import queue
import socket
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.support.events import wait_until
from tests.support.server import HOST, RunningServer, start_server
from tests.support.triton_models import write_triton_model

pytestmark = pytest.mark.integration

MODE = "TRITONCTL_INSTANCE_MODE"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("cancel_repo")
    for mode in ("process", "thread", "inline"):
        write_triton_model(
            repo, f"watch_plain_{mode}", "watch_plain", parameters={MODE: mode}, instance_count=2
        )
    for mode in ("process", "thread"):
        write_triton_model(repo, f"watch_{mode}", "watch", parameters={MODE: mode})
    with start_server(repo, timeout=120) as running:
        yield running


def _logged(server: RunningServer, line: str) -> None:
    wait_until(lambda: line in server.log, f"the model to log {line!r}")


def _input() -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("IN", [1], "INT32")
    tensor.set_data_from_numpy(np.array([1], np.int32))
    return tensor


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_an_http_client_closing_its_connection_cancels_the_executing_request(
    server: RunningServer, mode: str
) -> None:
    request_id = f"http-close-{mode}"
    body = json.dumps(
        {"id": request_id, "inputs": [{"name": "IN", "shape": [1], "datatype": "INT32", "data": [1]}]}
    ).encode()
    with socket.create_connection((HOST, server.http_port), timeout=10) as connection:
        connection.sendall(
            f"POST /v2/models/watch_plain_{mode}/infer HTTP/1.1\r\nHost: {HOST}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        _logged(server, f"started {request_id}")
    _logged(server, f"cancelled {request_id}: True")


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_a_cancelled_grpc_call_is_cancelled_in_the_model(server: RunningServer, mode: str) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    request_id = f"grpc-cancel-{mode}"
    answers: queue.Queue[object] = queue.Queue()
    call = client.async_infer(
        f"watch_plain_{mode}",
        [_input()],
        request_id=request_id,
        callback=lambda result, error: answers.put(error),
    )
    _logged(server, f"started {request_id}")
    call.cancel()
    _logged(server, f"cancelled {request_id}: True")
    assert "CANCELLED" in str(answers.get(timeout=30))


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_a_cancelled_stream_cancels_its_decoupled_request(server: RunningServer, mode: str) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    results: queue.Queue[tuple[object, object]] = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    request_id = f"stream-cancel-{mode}"
    client.async_stream_infer(f"watch_{mode}", [_input()], request_id=request_id)
    _, error = results.get(timeout=30)  # the first response came: the model now watches
    assert error is None
    client.stop_stream(cancel_requests=True)
    _logged(server, f"cancelled {request_id}: True")  # the request's and the sender's is_cancelled()
    client.close()


@pytest.mark.parametrize("mode", ["process", "thread", "inline"])
def test_the_request_timeout_cancels_it_in_the_model(server: RunningServer, mode: str) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    request_id = f"timeout-{mode}"
    with pytest.raises(InferenceServerException, match="cancelled"):
        client.infer(f"watch_plain_{mode}", [_input()], request_id=request_id, timeout=200_000)
    _logged(server, f"cancelled {request_id}: True")
    assert client.is_server_live()
