"""The lean HTTP/2 gRPC stack at the frame level: flow control, deadlines, concurrency, bad bytes.

A raw-socket HTTP/2 client (hpack for header blocks) checks what tritonclient cannot show: that
the server never sends more than the client's windows allow nor frames above its MAX_FRAME_SIZE,
that grpc-timeout is enforced by the server itself, and that malformed prefaces and frames end
only their own connection (GOAWAY with the right error code) while the server keeps serving.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import hpack
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.utils import InferenceServerException

from server.vocabulary import h2frames as h2
from tests.support.models import write_python_model
from tests.support.server import RunningServer, start_server

pytestmark = pytest.mark.integration
INFER = "/inference.GRPCInferenceService/ModelInfer"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("h2_wire_repo")
    write_python_model(repo, "big", "identity", dims=[-1], max_batch_size=0)
    write_python_model(repo, "slow", "slow", dims=[-1], max_batch_size=0, delay_ms=1500)
    with start_server(repo, "--grpc-stack=h2", timeout=180) as running:
        yield running


class RawH2:
    """A blocking HTTP/2 client that shows every frame."""

    def __init__(self, url: str, settings: bytes = b"", preface: bytes = h2.PREFACE) -> None:
        host, _, port = url.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.encoder, self.decoder = hpack.Encoder(), hpack.Decoder()
        self.buffer = b""
        self.sock.sendall(preface + (h2.frame(h2.SETTINGS, 0, 0, settings) if preface == h2.PREFACE else b""))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def start_call(
        self, stream_id: int, path: str = INFER, extra: list[tuple[str, str]] | None = None
    ) -> None:
        headers = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "x")]
        headers += [("content-type", "application/grpc"), ("te", "trailers"), *(extra or [])]
        self.send(h2.frame(h2.HEADERS, h2.END_HEADERS, stream_id, self.encoder.encode(headers)))

    def read_frame(self) -> tuple[int, int, int, bytes] | None:
        while len(self.buffer) < 9 or len(self.buffer) < 9 + int.from_bytes(self.buffer[:3], "big"):
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                return None
            self.buffer += chunk
        length = int.from_bytes(self.buffer[:3], "big")
        kind, flags, stream_id = struct.unpack(">BBI", self.buffer[3:9])
        payload, self.buffer = self.buffer[9 : 9 + length], self.buffer[9 + length :]
        return kind, flags, stream_id & 0x7FFFFFFF, payload

    def until_goaway(self) -> int | None:
        """The error code of the GOAWAY before the server closes; None if it just closed."""
        code = None
        while (got := self.read_frame()) is not None:
            if got[0] == h2.GOAWAY:
                code = int.from_bytes(got[3][4:8], "big")
        return code

    def headers(self, block: bytes) -> dict[str, str]:
        return {str(name): str(value) for name, value in self.decoder.decode(block)}

    def close(self) -> None:
        self.sock.close()


def infer_message(model: str, values: np.ndarray) -> bytes:
    request = pb.ModelInferRequest(model_name=model, raw_input_contents=[values.tobytes()])
    request.inputs.add(name="INPUT0", datatype="FP32", shape=list(values.shape))
    return h2.grpc_message(request.SerializeToString())


def grpc_input(values: np.ndarray) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("INPUT0", list(values.shape), "FP32")
    tensor.set_data_from_numpy(values)
    return tensor


def assert_serving(server: RunningServer) -> None:
    assert server.process.poll() is None
    client = grpcclient.InferenceServerClient(server.grpc_url)
    values = np.arange(4, dtype=np.float32)
    np.testing.assert_array_equal(client.infer("big", [grpc_input(values)]).as_numpy("OUTPUT0"), values)


def test_answers_respect_the_client_windows_and_frame_size(server: RunningServer) -> None:
    window = 1000
    raw = RawH2(server.grpc_url, struct.pack(">HI", h2.SETTINGS_INITIAL_WINDOW_SIZE, window))
    values = np.arange(300_000, dtype=np.float32)  # 1.2 MB each way: more than every window
    message = infer_message("big", values)
    raw.start_call(1)
    for start in range(0, len(message), 16_384):
        end = start + 16_384 >= len(message)
        raw.send(h2.frame(h2.DATA, h2.END_STREAM if end else 0, 1, message[start : start + 16_384]))
    stream_credit, connection_credit, body = window, h2.DEFAULT_WINDOW, b""
    trailers: dict[str, str] = {}
    while (got := raw.read_frame()) is not None:
        kind, flags, _, payload = got
        if kind == h2.DATA:
            assert len(payload) <= h2.DEFAULT_MAX_FRAME
            stream_credit -= len(payload)
            connection_credit -= len(payload)
            assert stream_credit >= 0 and connection_credit >= 0, "the server overran a window"
            body += payload
            if payload:  # give exactly what was used back, in small steps
                increment = struct.pack(">I", len(payload))
                raw.send(
                    h2.frame(h2.WINDOW_UPDATE, 0, 1, increment) + h2.frame(h2.WINDOW_UPDATE, 0, 0, increment)
                )
                stream_credit += len(payload)
                connection_credit += len(payload)
        elif kind == h2.HEADERS and flags & h2.END_STREAM:
            trailers = raw.headers(payload)
            break
        elif kind == h2.HEADERS:
            raw.decoder.decode(payload)
    raw.close()
    assert trailers.get("grpc-status") == "0", trailers
    assert body[0] == 0 and int.from_bytes(body[1:5], "big") == len(body) - 5
    response = pb.ModelInferResponse.FromString(body[5:])
    np.testing.assert_array_equal(np.frombuffer(response.raw_output_contents[0], np.float32), values)


def test_tensors_over_one_mib_both_ways_through_tritonclient(server: RunningServer) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    values = np.random.default_rng(0).random(3 << 18, dtype=np.float32)  # 3 MiB
    np.testing.assert_array_equal(client.infer("big", [grpc_input(values)]).as_numpy("OUTPUT0"), values)


def test_many_concurrent_streams_on_one_connection(server: RunningServer) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    results: dict[int, np.ndarray] = {}
    done = threading.Semaphore(0)

    def callback(index: int) -> object:
        def record(result: grpcclient.InferResult, error: InferenceServerException | None) -> None:
            results[index] = result.as_numpy("OUTPUT0") if error is None else error
            done.release()

        return record

    count = 200
    for index in range(count):
        client.async_infer("big", [grpc_input(np.full(8, index, np.float32))], callback(index))
    for _ in range(count):
        assert done.acquire(timeout=60)
    assert all(np.array_equal(results[i], np.full(8, i, np.float32)) for i in range(count)), results


def test_the_server_enforces_grpc_timeout(server: RunningServer) -> None:
    raw = RawH2(server.grpc_url)
    raw.start_call(1, extra=[("grpc-timeout", "200m")])
    raw.send(h2.frame(h2.DATA, h2.END_STREAM, 1, infer_message("slow", np.ones(2, np.float32))))
    status = None
    while status is None and (got := raw.read_frame()) is not None:
        if got[0] == h2.HEADERS:
            status = raw.headers(got[3]).get("grpc-status")
    raw.close()
    assert status == "4"  # DEADLINE_EXCEEDED, sent by the server while the model still runs
    client = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException, match="Deadline"):
        client.infer("slow", [grpc_input(np.ones(2, np.float32))], client_timeout=0.3)
    assert_serving(server)


@pytest.mark.parametrize(
    "preface",
    [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", b"\x00" * 64],
    ids=["http1", "bad-magic", "zeros"],
)
def test_a_bad_preface_closes_only_that_connection(server: RunningServer, preface: bytes) -> None:
    raw = RawH2(server.grpc_url, preface=preface)
    assert raw.until_goaway() in (h2.PROTOCOL_ERROR, None)
    raw.close()
    assert_serving(server)


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        (h2.frame(h2.CONTINUATION, h2.END_HEADERS, 1, b"\x82"), h2.PROTOCOL_ERROR),
        (h2.frame(h2.HEADERS, h2.END_HEADERS, 1, b"\xff\xff\xff\xff\x7f"), h2.COMPRESSION_ERROR),
        (h2.frame(h2.HEADERS, h2.END_HEADERS, 2, b"\x82"), h2.PROTOCOL_ERROR),
        (b"\xff\xff\xff" + bytes([h2.DATA, 0, 0, 0, 0, 1]), h2.FRAME_SIZE_ERROR),
        (h2.frame(h2.SETTINGS, 0, 0, b"\x00\x04\x00"), h2.FRAME_SIZE_ERROR),
        (h2.frame(h2.SETTINGS, 0, 0, struct.pack(">HI", h2.SETTINGS_MAX_FRAME_SIZE, 5)), h2.PROTOCOL_ERROR),
        (h2.frame(h2.PING, 0, 0, b"\x01"), h2.FRAME_SIZE_ERROR),
        (h2.frame(h2.WINDOW_UPDATE, 0, 0, b"\x00\x00\x00\x00"), h2.FLOW_CONTROL_ERROR),
    ],
    ids=["lone-continuation", "bad-hpack", "even-stream", "huge-frame", "short-settings", "bad-frame-size",
         "short-ping", "zero-window-update"],
)  # fmt: skip
def test_malformed_frames_end_the_connection_with_goaway(
    server: RunningServer, frames: bytes, code: int
) -> None:
    raw = RawH2(server.grpc_url)
    raw.send(frames)
    assert raw.until_goaway() == code
    raw.close()
    assert_serving(server)


def test_bad_calls_end_with_a_status_and_the_connection_goes_on(server: RunningServer) -> None:
    raw = RawH2(server.grpc_url)
    message = infer_message("big", np.ones(2, np.float32))
    raw.start_call(1, path="/inference.GRPCInferenceService/NoSuchRpc")
    raw.send(h2.frame(h2.DATA, h2.END_STREAM, 1, message))
    raw.start_call(3)
    raw.send(h2.frame(h2.DATA, h2.END_STREAM, 3, b"\x01" + message[1:]))  # compressed flag
    raw.start_call(5)
    raw.send(h2.frame(h2.DATA, h2.END_STREAM, 5, message + message))  # two messages in a unary call
    raw.start_call(7)
    raw.send(h2.frame(h2.DATA, 0, 7, message[:3]) + h2.frame(h2.RST_STREAM, 0, 7, b"\x00\x00\x00\x08"))
    raw.start_call(9)
    raw.send(h2.frame(h2.PING, 0, 0, b"12345678") + h2.frame(h2.DATA, h2.END_STREAM, 9, message))
    statuses: dict[int, str] = {}
    pinged = False
    while len(statuses) < 4 and (got := raw.read_frame()) is not None:
        kind, flags, stream_id, payload = got
        if kind == h2.HEADERS:
            status = raw.headers(payload).get("grpc-status")
            if status is not None:
                statuses[stream_id] = status
        pinged = pinged or (kind == h2.PING and bool(flags & h2.ACK) and payload == b"12345678")
    raw.close()
    assert statuses == {1: "12", 3: "12", 5: "3", 9: "0"}
    assert pinged


def _server_settings(raw: RawH2) -> dict[int, int]:
    while (got := raw.read_frame()) is not None:
        kind, flags, _, payload = got
        if kind == h2.SETTINGS and not flags & h2.ACK:
            return dict(struct.unpack_from(">HI", payload, o) for o in range(0, len(payload), 6))
    raise AssertionError("no SETTINGS from the server")


def test_streams_beyond_the_advertised_limit_are_refused(server: RunningServer) -> None:
    raw = RawH2(server.grpc_url)
    try:
        limit = _server_settings(raw)[h2.SETTINGS_MAX_CONCURRENT_STREAMS]
        assert 100 <= limit <= 4096
        for index in range(limit + 1):  # open calls that wait for their input
            raw.start_call(2 * index + 1)
        refused = 2 * limit + 1
        while (got := raw.read_frame()) is not None:
            kind, _, stream_id, payload = got
            if kind == h2.RST_STREAM:
                assert stream_id == refused, f"stream {stream_id} reset, only {refused} should be"
                assert int.from_bytes(payload, "big") == h2.REFUSED_STREAM
                break
        else:
            raise AssertionError("the stream over the limit was not refused")
        # an open call still completes: send stream 1 its input
        raw.send(h2.frame(h2.DATA, h2.END_STREAM, 1, infer_message("big", np.ones(4, np.float32))))
        while (got := raw.read_frame()) is not None:
            if got[0] == h2.HEADERS and got[2] == 1 and got[1] & h2.END_STREAM:
                assert raw.headers(got[3]).get("grpc-status") == "0"
                break
    finally:
        raw.close()
    assert_serving(server)


@pytest.mark.parametrize("windows", ["default", "open"])
def test_a_client_that_never_reads_is_no_longer_read(server: RunningServer, windows: str) -> None:
    """64 MiB of answers nobody reads: the server stops reading that client (its sends block)
    instead of buffering them all, and keeps serving everyone else. Requests of 512 KiB stay
    within the server's stream window and go in 16 KiB DATA frames, paced so that answers pile
    up (a client sending faster than the model answers is bounded by the queues, not by this)."""
    import psutil

    settings = b""
    if windows == "open":  # flow control never holds answers back: the transport's buffer fills
        settings = struct.pack(">HI", h2.SETTINGS_INITIAL_WINDOW_SIZE, h2.MAX_WINDOW)
    raw = RawH2(server.grpc_url, settings)
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    if windows == "open":
        raw.send(h2.frame(h2.WINDOW_UPDATE, 0, 0, struct.pack(">I", h2.MAX_WINDOW - h2.DEFAULT_WINDOW)))
    process = psutil.Process(server.process.pid)
    rss_before = process.memory_info().rss
    message = infer_message("big", np.zeros(1 << 17, np.float32))  # 512 KiB each way
    pieces = [message[start : start + (1 << 14)] for start in range(0, len(message), 1 << 14)]
    raw.sock.settimeout(5)
    sent = calls = 128
    try:
        for index in range(calls):
            stream_id = 2 * index + 1
            raw.start_call(stream_id)
            for number, piece in enumerate(pieces):
                last = h2.END_STREAM if number == len(pieces) - 1 else 0
                raw.send(h2.frame(h2.DATA, last, stream_id, piece))
            time.sleep(0.02)
    except TimeoutError:
        sent = index  # the server stopped reading us: what this test wants to see
    try:
        assert sent < calls, "the server read 64 MiB of requests from a client that reads nothing"
        growth = process.memory_info().rss - rss_before
        assert growth < 48 << 20, f"server RSS grew {growth >> 20} MiB"
        assert_serving(server)
    finally:
        raw.close()
