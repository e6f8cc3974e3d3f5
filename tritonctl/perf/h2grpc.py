"""A minimal gRPC-over-HTTP/2 client for the load generator: unary calls of prebuilt messages only.

Why not grpcio: its Python layer costs ~250 µs of CPU per call here, more than perf_analyzer's
whole client, and on a machine the server shares that CPU is taken from the server under test.
This client writes each request as two prebuilt frames (HEADERS with a fixed literal-only HPACK
block, so no encoder state, and DATA), and reads replies with a frame parser and `hpack`'s decoder
(needed: the server indexes its response headers). It honours the peer's flow-control windows,
max frame size and concurrent-stream limit, answers PING and SETTINGS, and stops on GOAWAY.
Plaintext (h2c with prior knowledge) only, like the rest of `perf`.

HTTP/2: RFC 9113; HPACK: RFC 7541; gRPC over HTTP/2: grpc/doc/PROTOCOL-HTTP2.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import deque
from typing import cast
from urllib.parse import unquote

from server.vocabulary.h2frames import (  # framing shared with our HTTP/2 gRPC server
    ACK,
    CONTINUATION,
    DATA,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    GRPC_STATUS,
    HEADERS,
    LAST_STREAM_ID,
    MAX_WINDOW,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    REFUSED_STREAM,
    RST_STREAM,
    SETTINGS,
    SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_CONCURRENT_STREAMS,
    SETTINGS_MAX_FRAME_SIZE,
    WINDOW_UPDATE,
    HeaderBlockDecoder,
    frame,
    grpc_message,
)
from server.vocabulary.h2frames import hpack_int as _hpack_int
from server.vocabulary.h2frames import hpack_string as _hpack_string
from tritonctl.perf.transport import TransportError

REFUSED = "refused"  # outcome of a stream the server refused before processing it: sent again


def request_header_block(authority: str, path: str) -> bytes:
    """HPACK block for a gRPC unary call: static-table entries and literals without indexing only,
    so the same bytes are valid for every request on the connection (no encoder state)."""
    block = bytearray(b"\x83\x86")  # :method POST (static 3), :scheme http (static 6)
    for static_index, value in (
        (4, path),
        (1, authority),
        (31, "application/grpc"),
    ):  # :path :authority c-type
        block += _hpack_int(static_index, 4, 0x00) + _hpack_string(value)
    block += b"\x00" + _hpack_string("te") + _hpack_string("trailers")
    return bytes(block)


class _Stream:
    __slots__ = ("headers_seen", "outcome", "pending", "window")

    def __init__(self, outcome: asyncio.Future[str | None], window: int) -> None:
        self.outcome = outcome
        self.window = window  # how much more DATA the peer lets us send on this stream
        self.pending = b""  # request bytes waiting for flow-control credit
        self.headers_seen = False


class H2GrpcConnection(asyncio.Protocol):
    """One HTTP/2 connection carrying any number of concurrent unary gRPC calls."""

    def __init__(self, authority: str, path: str) -> None:
        self._header_block = request_header_block(authority, path)
        self._headers = HeaderBlockDecoder()
        self._outgoing: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._streams: dict[int, _Stream] = {}
        self._next_id = 1
        self._peer_window = DEFAULT_WINDOW  # connection-level send window
        self._peer_initial_window = DEFAULT_WINDOW
        self._peer_max_frame = 16_384
        self._peer_max_streams = 2**31
        self._waiting_for_stream: deque[asyncio.Future[None]] = deque()
        self._blocked: deque[int] = deque()  # streams with request bytes waiting for window
        self._received_unacked = 0
        self._header_fragments: bytearray | None = None
        self._fragment_stream = 0
        self._fragment_flags = 0
        self.settings_received: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed_reason: str | None = None

    # asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        settings = struct.pack(">HIHIHI", 0x2, 0, SETTINGS_INITIAL_WINDOW_SIZE, MAX_WINDOW, 0x6, 1 << 20)
        self._transport.write(
            PREFACE
            + frame(SETTINGS, 0, 0, settings)
            + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", MAX_WINDOW - DEFAULT_WINDOW))
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_all(f"connection lost: {exc or 'closed by the server'}")

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        offset, end = 0, len(buffer)
        while end - offset >= 9:
            length = int.from_bytes(buffer[offset : offset + 3], "big")
            if end - offset < 9 + length:
                break
            kind, flags = buffer[offset + 3], buffer[offset + 4]
            stream_id = int.from_bytes(buffer[offset + 5 : offset + 9], "big") & 0x7FFFFFFF
            payload = bytes(buffer[offset + 9 : offset + 9 + length])
            offset += 9 + length
            self._on_frame(kind, flags, stream_id, payload)
        del buffer[:offset]

    # frames ----------------------------------------------------------------------------------
    def _on_frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if kind == DATA:
            self._on_data(flags, stream_id, payload)
        elif kind == HEADERS:
            if flags & PADDED:
                payload = payload[1 : len(payload) - payload[0]]
            if flags & PRIORITY:
                payload = payload[5:]
            if flags & END_HEADERS:
                self._on_header_block(stream_id, flags, payload)
            else:
                self._header_fragments = bytearray(payload)
                self._fragment_stream, self._fragment_flags = stream_id, flags
        elif kind == CONTINUATION and self._header_fragments is not None:
            self._header_fragments += payload
            if flags & END_HEADERS:
                block, self._header_fragments = bytes(self._header_fragments), None
                self._on_header_block(self._fragment_stream, self._fragment_flags, block)
        elif kind == SETTINGS and not flags & ACK:
            self._on_settings(payload)
        elif kind == PING and not flags & ACK:
            self._write(frame(PING, ACK, 0, payload))
        elif kind == WINDOW_UPDATE:
            self._on_window_update(stream_id, int.from_bytes(payload[:4], "big") & 0x7FFFFFFF)
        elif kind == RST_STREAM:
            code = int.from_bytes(payload[:4], "big")
            # REFUSED_STREAM: not processed at all, safe to send again (RFC 9113 section 8.7).
            self._finish(
                stream_id, REFUSED if code == REFUSED_STREAM else f"stream reset (HTTP/2 error {code})"
            )
        elif kind == GOAWAY:
            last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            detail = payload[8:].decode("utf-8", "replace")
            self.closed_reason = f"the server closed the connection (GOAWAY {detail})".strip()
            for stream in [s for s in self._streams if s > last]:
                self._finish(stream, self.closed_reason)

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        # Replies are not parsed (the status is in the trailers); only give the credit back.
        self._received_unacked += len(payload)
        if self._received_unacked > MAX_WINDOW // 2:
            self._write(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self._received_unacked)))
            self._received_unacked = 0
        if flags & END_STREAM:
            self._finish(stream_id, "the server ended the call without a status")

    def _on_header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        headers = self._headers.decode(block)
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        status: bytes | None = None
        message = b""
        for name, value in headers:
            if name == b"grpc-status":
                status = value
            elif name == b"grpc-message":
                message = value
            elif name == b":status" and value != b"200":
                self._finish(stream_id, f"HTTP {value.decode()} from the gRPC endpoint")
                return
        if flags & END_STREAM or status is not None:
            if status == b"0":
                self._finish(stream_id, None)
            else:
                code = GRPC_STATUS.get(int(status or b"2"), "UNKNOWN")
                self._finish(stream_id, f"{code}: {unquote(message.decode('utf-8', 'replace'))}")

    def _on_settings(self, payload: bytes) -> None:
        for offset in range(0, len(payload) - 5, 6):
            key, value = struct.unpack_from(">HI", payload, offset)
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                for stream in self._streams.values():
                    stream.window += value - self._peer_initial_window
                self._peer_initial_window = value
            elif key == SETTINGS_MAX_FRAME_SIZE:
                self._peer_max_frame = value
            elif key == SETTINGS_MAX_CONCURRENT_STREAMS:
                self._peer_max_streams = value
        self._write(frame(SETTINGS, ACK, 0))
        if not self.settings_received.done():
            self.settings_received.set_result(None)
        self._flush_blocked()

    def _on_window_update(self, stream_id: int, increment: int) -> None:
        if stream_id == 0:
            self._peer_window += increment
        elif stream_id in self._streams:
            self._streams[stream_id].window += increment
        self._flush_blocked()

    # requests --------------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        # Frames written in one loop iteration leave in one send() (fewer syscalls under load).
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._send_outgoing)
        self._outgoing.append(data)

    def _send_outgoing(self) -> None:
        data, self._outgoing = b"".join(self._outgoing), []
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _data_frames(self, stream_id: int, stream: _Stream) -> bytes:
        """As much of the stream's pending request as the windows allow, as DATA frames."""
        allowed = min(len(stream.pending), stream.window, self._peer_window)
        if allowed <= 0 and stream.pending:
            return b""
        chunk, stream.pending = stream.pending[:allowed], stream.pending[allowed:]
        stream.window -= allowed
        self._peer_window -= allowed
        frames = []
        size = self._peer_max_frame
        for start in range(0, max(len(chunk), 1), size):
            last = start + size >= len(chunk) and not stream.pending
            frames.append(frame(DATA, END_STREAM if last else 0, stream_id, chunk[start : start + size]))
        return b"".join(frames)

    def _flush_blocked(self) -> None:
        for _ in range(len(self._blocked)):
            stream_id = self._blocked.popleft()
            stream = self._streams.get(stream_id)
            if stream is None:
                continue
            self._write(self._data_frames(stream_id, stream))
            if stream.pending:
                self._blocked.append(stream_id)

    async def call(self, message: bytes) -> str | None:
        """One unary call; `message` is already gRPC-framed (see grpc_message)."""
        while True:
            outcome = await self._call_once(message)
            if outcome is not REFUSED:
                return outcome
            # Servers may count a finished stream against their limit a little longer than we do.
            await asyncio.sleep(0)

    async def _call_once(self, message: bytes) -> str | None:
        if self.closed_reason is not None:
            raise TransportError(self.closed_reason)
        while len(self._streams) >= self._peer_max_streams:
            waiter = asyncio.get_running_loop().create_future()
            self._waiting_for_stream.append(waiter)
            await waiter
        stream_id = self._next_id
        if stream_id > LAST_STREAM_ID:
            raise TransportError("stream ids exhausted on this connection")
        self._next_id += 2
        stream = _Stream(asyncio.get_running_loop().create_future(), self._peer_initial_window)
        stream.pending = message
        self._streams[stream_id] = stream
        head = frame(HEADERS, END_HEADERS, stream_id, self._header_block)
        self._write(head + self._data_frames(stream_id, stream))
        if stream.pending:
            self._blocked.append(stream_id)
        return await stream.outcome

    def _finish(self, stream_id: int, outcome: str | None) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        if not stream.outcome.done():
            stream.outcome.set_result(outcome)
        if self._waiting_for_stream:
            waiter = self._waiting_for_stream.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def _fail_all(self, reason: str) -> None:
        self.closed_reason = self.closed_reason or reason
        for stream in list(self._streams.values()):
            if not stream.outcome.done():
                stream.outcome.set_exception(TransportError(self.closed_reason))
        self._streams.clear()
        while self._waiting_for_stream:
            waiter = self._waiting_for_stream.popleft()
            if not waiter.done():
                waiter.set_exception(TransportError(self.closed_reason))
        if not self.settings_received.done():
            self.settings_received.set_exception(TransportError(self.closed_reason))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.write(frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0)))
            self._transport.close()


class H2GrpcSender:
    """`Sender` over one H2GrpcConnection to Triton's ModelInfer."""

    PATH = "/inference.GRPCInferenceService/ModelInfer"

    def __init__(self, url: str) -> None:
        host, _, port = url.rpartition(":")
        self._host = host.strip("[]")
        self._port = int(port)
        self._url = url
        self._connection: H2GrpcConnection | None = None
        self._framed: dict[bytes, bytes] = {}

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: H2GrpcConnection(self._url, self.PATH), self._host, self._port
            )
            await asyncio.wait_for(connection.settings_received, timeout=30)
        except (OSError, asyncio.TimeoutError, TransportError) as exc:
            raise TransportError(f"cannot open an HTTP/2 connection to {self._url}: {exc}") from exc
        self._connection = connection

    async def send(self, payload: bytes) -> str | None:
        framed = self._framed.get(payload)  # bytes cache their hash: a cheap lookup
        if framed is None:  # payloads are few and live for the whole run: frame each once
            if len(self._framed) > 256:
                self._framed.clear()
            framed = self._framed[payload] = grpc_message(payload)
        connection = self._connection
        if connection is None or connection.closed_reason is not None:
            await self.start()
            connection = cast(H2GrpcConnection, self._connection)
        return await connection.call(framed)

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
