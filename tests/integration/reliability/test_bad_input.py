"""Hostile and malformed requests on the real server: every size is checked before allocation and
every mistake is a 400 / INVALID_ARGUMENT with a message, never a 500 or a crash (issue #7;
Triton's L0_input_validation, L0_http_fuzz and its CVEs on oversized / compressed payloads)."""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from tests.support.models import write_python_model
from tests.support.server import RunningServer, send_raw, start_server

pytestmark = pytest.mark.integration

LIMIT = 1 << 20  # --http-max-input-size for this module
INFER = "/v2/models/identity/infer"
INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"


def serve(tmp_path_factory: pytest.TempPathFactory, stack: str) -> Iterator[RunningServer]:
    repo: Path = tmp_path_factory.mktemp(f"bad_input_{stack}")
    write_python_model(repo, "identity", "identity", dims=[4])
    write_python_model(repo, "strings", "strings", dims=[-1])
    args = (f"--http-max-input-size={LIMIT}", f"--grpc-max-message-size={4 * LIMIT}", f"--grpc-stack={stack}")
    with start_server(repo, *args) as running:
        yield running


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    yield from serve(tmp_path_factory, "grpcio")


@pytest.fixture(scope="module")
def h2_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    yield from serve(tmp_path_factory, "h2")


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{server.http_url}", timeout=30) as client:
        yield client


@pytest.fixture(scope="module", params=["grpcio", "h2"])
def channel(request: pytest.FixtureRequest) -> Iterator[grpc.Channel]:
    """gRPC on both stacks: grpc.aio and the lean HTTP/2 server."""
    target: RunningServer = request.getfixturevalue("server" if request.param == "grpcio" else "h2_server")
    with grpc.insecure_channel(target.grpc_url) as opened:
        yield opened


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def fp32_input(shape: Any = (1, 4), data: Any = None, **extra: Any) -> dict[str, Any]:
    entry = {"name": "INPUT0", "datatype": "FP32", "shape": shape}
    entry["data"] = [1.0, 2.0, 3.0, 4.0] if data is None else data
    entry.update(extra)
    return entry


def assert_400(response: httpx.Response, *fragments: str) -> None:
    assert response.status_code == 400, (response.status_code, response.text)
    message = response.json()["error"]
    assert message, response.text
    for fragment in fragments:
        assert fragment in message, message


def test_the_model_answers_a_good_request(http: httpx.Client) -> None:
    response = http.post(INFER, json={"inputs": [fp32_input()]})
    assert response.status_code == 200, response.text


# -- sizes: checked before anything is allocated ----------------------------------------------------
def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(server: RunningServer) -> None:
    head = f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: {1 << 40}\r\n\r\n".encode()
    assert status_of(send_raw(server.http_port, head)) == 400


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compression_bomb_is_refused_at_the_limit(http: httpx.Client, encoding: str) -> None:
    body = b'{"inputs": [' + b" " * (64 * LIMIT) + b"]}"  # 64 MiB once inflated, ~64 KiB on the wire
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    assert len(packed) < LIMIT
    response = http.post(INFER, content=packed, headers={"Content-Encoding": encoding})
    assert_400(response, "--http-max-input-size")


def test_compressed_requests_within_the_limit_work_and_corrupt_ones_are_400(http: httpx.Client) -> None:
    body = json.dumps({"inputs": [fp32_input()]}).encode()
    response = http.post(INFER, content=gzip.compress(body), headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    response = http.post(INFER, content=b"\x1f\x8b garbage", headers={"Content-Encoding": "gzip"})
    assert_400(response, "decompress")
    response = http.post(INFER, content=body, headers={"Content-Encoding": "br"})
    assert response.status_code in (400, 415, 501), response.text


def stream_until_refused(port: int, head: bytes, filler: bytes, total: int) -> tuple[int, int]:
    """Send `head` then up to `total` bytes of `filler`; (bytes sent, HTTP status or 0) once the
    server answers or drops the connection."""
    sent = 0
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        try:
            sock.sendall(head)
            while sent < total:
                sock.sendall(filler)
                sent += len(filler)
            answer = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            with contextlib.suppress(OSError):
                answer = sock.recv(65536)
    return sent, status_of(answer)


@pytest.mark.parametrize("part", ["url", "header"])
def test_oversized_request_line_and_headers_are_refused(server: RunningServer, part: str) -> None:
    head = b"GET /v2/models/" if part == "url" else b"GET /v2/health/live HTTP/1.1\r\nX-Filler: "
    total = 256 << 20
    sent, status = stream_until_refused(server.http_port, head, b"a" * 65536, total)
    # The server refuses (431) and closes long before the client is done: nothing is buffered.
    assert sent < total and status in (0, 431), (sent, status)
    assert server.get("/v2/health/live")[0] == 200


# -- JSON -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"null",
        b"[]",
        b"{",
        b'{"inputs": "x"}',
        b'{"inputs": [null]}',
        b'{"inputs": [{"name": 5}]}',
        b'{"inputs": [{"name": "INPUT0\xff\xfe", "datatype": "FP32", "shape": [1, 4], "data": [1,2,3,4]}]}',
        b'{"inputs": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}",
        b'{"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 4], "data": '
        + b"[" * 5000
        + b"1"
        + b"]" * 5000
        + b"}]}",
        b'{"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, "x"]}]}',
        b'{"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 4], "data": [1e999, 2, 3, 4]}]}',
        b'{"inputs": [], "outputs": {"name": "OUTPUT0"}}',
    ],
    ids=[
        "empty",
        "null",
        "array",
        "truncated",
        "inputs-not-a-list",
        "input-null",
        "name-not-a-string",
        "bad-utf8",
        "deep-nesting",
        "deep-data-nesting",
        "wrong-element-type",
        "float-overflow",
        "outputs-not-a-list",
    ],
)
def test_malformed_json_is_400(http: httpx.Client, body: bytes) -> None:
    assert_400(http.post(INFER, content=body))


# -- shapes, types and byte counts ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        (fp32_input(shape=[-1, 4]), "shape"),
        (fp32_input(shape=[1, -4]), "shape"),
        (fp32_input(shape=[1 << 40, 1 << 40]), ""),
        (fp32_input(shape=[1, 1 << 62, 1 << 62]), ""),
        (fp32_input(shape=[2**64 + 1, 4]), ""),
        (fp32_input(shape=[1, 4.5]), "shape"),
        (fp32_input(shape="14"), "shape"),
        (fp32_input(shape=[1, 5], data=[1, 2, 3, 4, 5]), "shape"),
        (fp32_input(shape=[1, 4], data=[1, 2, 3]), ""),
        (fp32_input(datatype="FP128"), "datatype"),
        (fp32_input(datatype="INT32", data=[1, 2, 3, 4]), "data-type"),
        (fp32_input(shape=[9, 4], data=[1.0] * 36), "batch-size"),
        ({"name": "NOPE", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}, "NOPE"),
    ],
    ids=[
        "negative-batch",
        "negative-dim",
        "huge-dims",
        "overflowing-dims",
        "beyond-int64",
        "float-dim",
        "shape-string",
        "wrong-shape",
        "too-few-elements",
        "unknown-datatype",
        "datatype-mismatch",
        "batch-too-big",
        "unknown-input",
    ],
)
def test_bad_tensors_are_400(http: httpx.Client, entry: dict[str, Any], fragment: str) -> None:
    assert_400(http.post(INFER, json={"inputs": [entry]}), fragment)


def test_many_inputs_and_outputs_are_400(http: httpx.Client) -> None:
    inputs = [fp32_input() | {"name": f"IN{i}"} for i in range(20_000)]
    assert_400(http.post(INFER, json={"inputs": inputs}))
    outputs = [{"name": f"OUT{i}"} for i in range(20_000)]
    assert_400(http.post(INFER, json={"inputs": [fp32_input()], "outputs": outputs}))


def binary_request(
    header: dict[str, Any], payload: bytes, header_length: str | None = None
) -> tuple[bytes, dict[str, str]]:
    encoded = json.dumps(header).encode()
    length = str(len(encoded)) if header_length is None else header_length
    return encoded + payload, {"Inference-Header-Content-Length": length}


@pytest.mark.parametrize(
    ("size", "payload", "header_length"),
    [
        (16, b"\0" * 8, None),
        (1 << 40, b"\0" * 16, None),
        (-16, b"\0" * 16, None),
        ("16", b"\0" * 16, None),
        (16, b"\0" * 32, None),
        (16, b"\0" * 16, "-3"),
        (16, b"\0" * 16, "abc"),
        (16, b"\0" * 16, str(1 << 40)),
    ],
    ids=[
        "short-data",
        "huge-size",
        "negative-size",
        "size-string",
        "extra-data",
        "negative-header-length",
        "header-length-not-a-number",
        "header-length-past-the-end",
    ],
)
def test_bad_binary_tensors_are_400(
    http: httpx.Client, size: Any, payload: bytes, header_length: str | None
) -> None:
    entry = {"name": "INPUT0", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": size}}
    body, headers = binary_request({"inputs": [entry]}, payload, header_length)
    assert_400(http.post(INFER, content=body, headers=headers))


@pytest.mark.parametrize(
    "payload",
    [
        struct.pack("<I", 1 << 31) + b"abc",  # an element length past the end of the buffer
        struct.pack("<I", 3) + b"abc" + b"\x01\x00",  # a truncated length prefix
        struct.pack("<I", 3) + b"abc",  # one element for a shape of two
    ],
    ids=["length-past-end", "truncated-prefix", "too-few-elements"],
)
def test_bad_bytes_tensors_are_400(http: httpx.Client, payload: bytes) -> None:
    entry = {
        "name": "INPUT0",
        "datatype": "BYTES",
        "shape": [1, 2],
        "parameters": {"binary_data_size": len(payload)},
    }
    body, headers = binary_request({"inputs": [entry]}, payload)
    assert_400(http.post("/v2/models/strings/infer", content=body, headers=headers))


# -- the HTTP layer ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "payload",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello on the plain port
        b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n",
        b"POST /v2 HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /v2 HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"POST /v2 HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"POST /v2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["tls-hello", "bad-header", "length-and-chunked", "negative-length", "two-lengths", "bad-chunk"],
)
def test_malformed_http_is_400_and_the_connection_closes(server: RunningServer, payload: bytes) -> None:
    assert status_of(send_raw(server.http_port, payload)) == 400


def test_bad_utf8_and_traversal_in_the_url_are_plain_not_found(http: httpx.Client) -> None:
    for path in ("/v2/models/%ff%fe/infer", "/v2/models/..%2F..%2Fetc/config", "/v2/models/%00/ready"):
        response = http.get(path) if not path.endswith("infer") else http.post(path, json={"inputs": []})
        assert response.status_code in (400, 404), (path, response.status_code, response.text)


# -- gRPC -------------------------------------------------------------------------------------------
def grpc_infer_raw(channel: grpc.Channel, payload: bytes) -> grpc.RpcError:
    call = channel.unary_unary(INFER_METHOD, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.RpcError) as failed:
        call(payload, timeout=30)
    return failed.value


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xff\xff\xff",
        b"\x0a\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",  # a length varint past 64 bits
        b"\x0a\x05ab",  # a string longer than the message
        b"\x0a\x02\xff\xfe",  # model_name that is not UTF-8
    ],
    ids=["garbage", "huge-varint", "truncated-field", "bad-utf8"],
)
def test_malformed_protobuf_is_invalid_argument(channel: grpc.Channel, payload: bytes) -> None:
    error = grpc_infer_raw(channel, payload)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    assert error.details()


def tensor(shape: list[int], datatype: str = "FP32") -> pb.ModelInferRequest.InferInputTensor:
    return pb.ModelInferRequest.InferInputTensor(name="INPUT0", datatype=datatype, shape=shape)


@pytest.mark.parametrize(
    "request_",
    [
        pb.ModelInferRequest(
            model_name="identity", inputs=[tensor([1, -4])], raw_input_contents=[b"\0" * 16]
        ),
        pb.ModelInferRequest(
            model_name="identity", inputs=[tensor([-1, 4])], raw_input_contents=[b"\0" * 16]
        ),
        pb.ModelInferRequest(
            model_name="identity", inputs=[tensor([1 << 62, 1 << 62])], raw_input_contents=[b"\0" * 16]
        ),
        pb.ModelInferRequest(model_name="identity", inputs=[tensor([1, 4])], raw_input_contents=[b"\0" * 15]),
        pb.ModelInferRequest(model_name="identity", inputs=[tensor([1, 4])], raw_input_contents=[b"", b""]),
        pb.ModelInferRequest(
            model_name="identity", inputs=[tensor([1, 4], "FP128")], raw_input_contents=[b"\0" * 16]
        ),
        pb.ModelInferRequest(model_name="identity", inputs=[tensor([1, 4])]),
        pb.ModelInferRequest(
            model_name="identity",
            inputs=[tensor([1, 4]) for _ in range(5000)],
            raw_input_contents=[b"\0" * 16] * 5000,
        ),
        pb.ModelInferRequest(
            model_name="strings",
            inputs=[tensor([1, 2], "BYTES")],
            raw_input_contents=[struct.pack("<I", 1 << 31) + b"abc"],
        ),
        pb.ModelInferRequest(model_name="identity", model_version="abc", inputs=[tensor([1, 4])]),
    ],
    ids=[
        "negative-dim",
        "negative-batch",
        "huge-dims",
        "short-raw",
        "raw-count",
        "unknown-datatype",
        "no-data",
        "repeated-inputs",
        "bytes-length-past-end",
        "bad-version",
    ],
)
def test_bad_grpc_tensors_are_invalid_argument(channel: grpc.Channel, request_: pb.ModelInferRequest) -> None:
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    with pytest.raises(grpc.RpcError) as failed:
        stub.ModelInfer(request_, timeout=30)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (
        failed.value.code(),
        failed.value.details(),
    )
    assert failed.value.details()


def test_grpc_messages_above_the_limit_are_refused(channel: grpc.Channel) -> None:
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    big = pb.ModelInferRequest(
        model_name="identity", inputs=[tensor([1, 4])], raw_input_contents=[b"\0" * (5 * LIMIT)]
    )
    with pytest.raises(grpc.RpcError) as failed:
        stub.ModelInfer(big, timeout=30)
    assert failed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, failed.value.details()


def test_the_server_is_still_healthy(server: RunningServer, http: httpx.Client) -> None:
    assert server.process.poll() is None
    assert http.get("/v2/health/ready").status_code == 200
    assert http.post(INFER, json={"inputs": [fp32_input()]}).status_code == 200
