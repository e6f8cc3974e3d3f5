"""A body over --http-max-input-size is answered 400 before it is read, and a client still sending
it reads that answer: the server half-closes after answering and discards what follows, bounded in
bytes and time (lingering close, as nginx does), instead of resetting the connection."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.support.models import write_python_model
from tests.support.server import HOST, RunningServer, start_server

pytestmark = [
    pytest.mark.integration,
    # tritonclient.http's gevent pool, closed from the GC's thread, warns as unraisable.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

LIMIT = 1 << 20  # --http-max-input-size for this module
BIG = 80 << 20  # sent in one blocking call
INFER = "/v2/models/identity/infer"
MESSAGE = f"request body of {BIG} bytes exceeds the maximum allowed size of {LIMIT} bytes"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo: Path = tmp_path_factory.mktemp("oversized_body")
    write_python_model(repo, "identity", "identity", dims=[-1])
    with start_server(repo, f"--http-max-input-size={LIMIT}") as running:
        yield running


@pytest.fixture(scope="module")
def big_body() -> bytes:
    return bytes(BIG)


def assert_refused(status: int, body: bytes) -> None:
    assert status == 400, (status, body[:200])
    message = json.loads(body)["error"]
    assert MESSAGE in message and "--http-max-input-size" in message, message


def assert_serving(server: RunningServer) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        tensor = httpclient.InferInput("INPUT0", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.arange(4, dtype=np.float32).reshape(1, 4))
        result = client.infer("identity", [tensor])
        assert result.as_numpy("OUTPUT0").tolist() == [[0.0, 1.0, 2.0, 3.0]]
    finally:
        client.close()


def test_http_client_sending_80_mib_in_one_call_reads_the_400(server: RunningServer, big_body: bytes) -> None:
    connection = http.client.HTTPConnection(HOST, server.http_port, timeout=60)
    try:
        connection.request("POST", INFER, body=big_body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        assert_refused(response.status, response.read())
    finally:
        connection.close()
    assert_serving(server)


def test_urllib_sending_80_mib_reads_the_400(server: RunningServer, big_body: bytes) -> None:
    request = urllib.request.Request(f"http://{server.http_url}{INFER}", data=big_body, method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert_refused(refused.value.code, refused.value.read())


def test_tritonclient_infer_with_a_too_large_tensor_gets_the_message(server: RunningServer) -> None:
    client = httpclient.InferenceServerClient(server.http_url, network_timeout=60)
    try:
        tensor = httpclient.InferInput("INPUT0", [1, BIG // 4], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, BIG // 4), dtype=np.float32))
        with pytest.raises(InferenceServerException) as refused:
            client.infer("identity", [tensor])
    finally:
        client.close()
    assert "exceeds the maximum allowed size" in str(refused.value), str(refused.value)
    assert "--http-max-input-size" in str(refused.value)
    assert_serving(server)


def read_answer(sock: socket.socket) -> bytes:
    """Everything up to the server's half-close (its FIN after the answer)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_lingering_holds_no_body_and_the_server_keeps_serving(server: RunningServer) -> None:
    process = psutil.Process(server.process.pid)
    rss_before = process.memory_info().rss
    head = f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: {BIG}\r\n\r\n".encode()
    chunk = bytes(1 << 20)
    with socket.create_connection((HOST, server.http_port), timeout=30) as sock:
        sock.sendall(head + chunk)
        answer = read_answer(sock)  # the 400, then EOF: the connection is now lingering
        head_part, _, body = answer.partition(b"\r\n\r\n")
        assert head_part.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in head_part
        assert_refused(400, body)
        assert_serving(server)  # while this connection is still being drained
        for _ in range(BIG // len(chunk) - 1):  # the rest of the body: discarded, never reset
            sock.sendall(chunk)
        rss_after = process.memory_info().rss
    assert rss_after - rss_before < BIG // 4, (rss_before, rss_after)
    assert_serving(server)


def test_a_client_sending_past_the_linger_budget_is_cut_off(server: RunningServer) -> None:
    # Declares just over the limit, then keeps sending: the server discards a bounded amount
    # (the declared rest plus a little), then closes; the client cannot make it read 1 GiB.
    head = f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: {LIMIT + 1}\r\n\r\n".encode()
    chunk = bytes(1 << 16)
    total = 1 << 30
    sent = 0
    with socket.create_connection((HOST, server.http_port), timeout=30) as sock:
        sock.sendall(head)
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            while sent < total:
                sock.sendall(chunk)
                sent += len(chunk)
    assert sent < 64 << 20, sent
    assert_serving(server)
