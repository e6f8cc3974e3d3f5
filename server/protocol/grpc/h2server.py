"""A lean gRPC server on raw asyncio: HTTP/2 (h2c, prior knowledge) written for this one service.

Why: grpc.aio costs ~400+ us of CPU per RPC on this machine (H4's profile), more than the real
Triton spends on a whole request. Here a unary call is one HEADERS block (HPACK-decoded by `hpack`,
with pure-indexed blocks cached), one DATA frame, `FromString`, the shared RPC (service.py) and a
single write of prebuilt response headers, the serialized answer and prebuilt trailers.

Covered: the connection preface, SETTINGS (the client's INITIAL_WINDOW_SIZE and MAX_FRAME_SIZE are
honoured), HEADERS + CONTINUATION, DATA with gRPC length-prefixed messages, flow control both ways
(big answers wait for WINDOW_UPDATE), PING, RST_STREAM (cancels the call), GOAWAY on shutdown,
grpc-timeout (the call is cancelled and answers DEADLINE_EXCEEDED), restricted-protocol headers,
unary RPCs and the bidirectional ModelStreamInfer. Not covered: TLS (grpc.aio serves it),
compression (a compressed message answers UNIMPLEMENTED). Protocol errors close the connection with
GOAWAY; the server keeps serving others.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

from server.errors import InvalidInput
from server.protocol.grpc.codec import Chunk
from server.protocol.grpc.h2send import BACKLOG_HIGH, H2Sender
from server.protocol.grpc.h2stream import (
    Stream,
    StreamFailure,
    grpc_timeout_seconds,
    one_message,
    take_messages,
)
from server.protocol.grpc.service import (
    METHODS,
    PRESERIALIZED,
    SERVICE_NAME,
    InferCall,
    InferenceRpcs,
    Method,
    grpc_status,
)
from server.protocol.restricted import GRPC_CATEGORIES, grpc_denial_message
from server.vocabulary import h2frames as h2
from server.vocabulary.eager import on_done
from server.vocabulary.h2frames import frame
from server.vocabulary.restrictions import Restrictions

logger = logging.getLogger(__name__)

OK, CANCELLED, INVALID_ARGUMENT, DEADLINE_EXCEEDED = 0, 1, 3, 4
RESOURCE_EXHAUSTED, UNIMPLEMENTED, UNAVAILABLE = 8, 12, 14
RECEIVE_WINDOW = 1 << 20  # per stream: what we let a client send before we give credit back
MAX_CONCURRENT_STREAMS = 1024  # open calls per connection; more are refused (the client may retry)

CONNECTION_WINDOW = 16 << 20
MAX_RECEIVE_FRAME = 1 << 20  # fewer, larger frames for big tensors (fewer Python iterations)
MAX_HEADER_BLOCK = 256 << 10
# length (3 bytes) and type share the first 4 bytes: read as one int, shifted; then flags, stream
_FRAME_HEAD = struct.Struct(">IBI")


class H2Settings:
    """What every connection of one server shares: the RPCs and the limits."""

    def __init__(self, rpcs: InferenceRpcs, restrictions: Restrictions, max_message_size: int) -> None:
        self.max_message_size = max_message_size
        self.rpcs = rpcs
        self.model_infer = METHODS["ModelInfer"]  # served without a task: see _start_infer
        prefix = f"/{SERVICE_NAME}/".encode()
        # :path -> (method, bound RPC, (header, value) a restricted group needs or None)
        self.routes: dict[bytes, tuple[Method, Callable[..., Any], tuple[bytes, bytes] | None, str]] = {}
        for name, method in METHODS.items():
            category = GRPC_CATEGORIES.get(name)
            restriction = restrictions.get(category) if category is not None else None
            required = (restriction.key.encode(), restriction.value.encode()) if restriction else None
            denial = grpc_denial_message(restriction) if restriction else ""
            self.routes[prefix + name.encode()] = (method, getattr(rpcs, name), required, denial)


class H2Connection(H2Sender, asyncio.Protocol):
    """One client connection: frames in, calls; frames out in H2Sender (h2send.py)."""

    def __init__(self, settings: H2Settings, connections: set[H2Connection]) -> None:
        super().__init__(settings.max_message_size)
        self._settings = settings
        self._connections = connections
        self._pieces: list[bytes | memoryview] = []  # reads ending inside a frame (see data_received)
        self._pieces_size = 0
        self._needed = 0  # bytes `_pieces` must reach before a frame (or the preface) is complete
        self._preface_seen = False
        self._headers = h2.HeaderBlockDecoder()
        self._last_stream_id = 0
        self._fragments: bytearray | None = None
        self._fragment_stream = 0
        self._fragment_flags = 0
        self._peer_initial_window = h2.DEFAULT_WINDOW
        self._received_unacked = 0
        self.draining = False

    # asyncio.Protocol ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._connections.add(self)
        self._transport.set_write_buffer_limits(high=BACKLOG_HIGH)  # then H2Sender.pause_writing
        settings = struct.pack(
            ">HIHIHIHI",
            h2.SETTINGS_ENABLE_PUSH,
            0,
            h2.SETTINGS_MAX_CONCURRENT_STREAMS,
            MAX_CONCURRENT_STREAMS,
            h2.SETTINGS_INITIAL_WINDOW_SIZE,
            RECEIVE_WINDOW,
            h2.SETTINGS_MAX_FRAME_SIZE,
            MAX_RECEIVE_FRAME,
        )
        increment = struct.pack(">I", CONNECTION_WINDOW - h2.DEFAULT_WINDOW)
        self._transport.write(frame(h2.SETTINGS, 0, 0, settings) + frame(h2.WINDOW_UPDATE, 0, 0, increment))

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        for stream in list(self._streams.values()):
            stream.cancel()
        self._streams.clear()
        self._blocked.clear()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        # Reads that end inside a frame wait in `_pieces` until the frame is complete, then are
        # joined once: a 600 KB frame arriving in three reads is copied once, not re-appended and
        # re-sliced. Frames are cut from the (immutable) read as views: DATA payloads are not copied.
        if self._pieces:
            self._pieces.append(data)
            self._pieces_size += len(data)
            if self._pieces_size < self._needed:
                return
            data = b"".join(self._pieces)
            self._pieces, self._pieces_size = [], 0
        offset = 0
        if not self._preface_seen:
            if len(data) < len(h2.PREFACE):
                if not h2.PREFACE.startswith(data):
                    self._close(h2.PROTOCOL_ERROR, "expected the HTTP/2 connection preface")
                    return
                self._keep(data, len(h2.PREFACE))
                return
            if not data.startswith(h2.PREFACE):
                self._close(h2.PROTOCOL_ERROR, "expected the HTTP/2 connection preface")
                return
            self._preface_seen = True
            offset = len(h2.PREFACE)
        end = len(data)
        view = memoryview(data)
        try:
            while end - offset >= 9:
                head, flags, stream_id = _FRAME_HEAD.unpack_from(data, offset)
                length = head >> 8
                if length > MAX_RECEIVE_FRAME:
                    raise ConnectionFailure(h2.FRAME_SIZE_ERROR, "frame over SETTINGS_MAX_FRAME_SIZE")
                if end - offset < 9 + length:
                    break
                kind = head & 0xFF
                payload = view[offset + 9 : offset + 9 + length]
                offset += 9 + length
                self._on_frame(
                    kind, flags, stream_id & 0x7FFFFFFF, payload if kind == h2.DATA else bytes(payload)
                )
        except ConnectionFailure as failure:
            self._close(failure.code, failure.reason)
            return
        if offset < end:
            rest = view[offset:]
            self._keep(rest, 9 + (int.from_bytes(rest[:3], "big") if len(rest) >= 9 else 0))
        if self._received_unacked >= CONNECTION_WINDOW // 2:
            self._write(frame(h2.WINDOW_UPDATE, 0, 0, struct.pack(">I", self._received_unacked)))
            self._received_unacked = 0

    def _keep(self, rest: bytes | memoryview, needed: int) -> None:
        """An incomplete frame (or preface): wait until `needed` bytes are there."""
        self._pieces, self._pieces_size, self._needed = [rest], len(rest), needed

    # frames in ----------------------------------------------------------------------------------
    def _on_frame(self, kind: int, flags: int, stream_id: int, payload: Any) -> None:
        if self._fragments is not None and kind != h2.CONTINUATION:
            raise ConnectionFailure(h2.PROTOCOL_ERROR, "expected CONTINUATION")
        if kind == h2.DATA:
            self._on_data(flags, stream_id, payload)
        elif kind == h2.HEADERS:
            self._on_headers(flags, stream_id, payload)
        elif kind == h2.CONTINUATION:
            if self._fragments is None or stream_id != self._fragment_stream:
                raise ConnectionFailure(h2.PROTOCOL_ERROR, "unexpected CONTINUATION")
            self._fragments += payload
            if len(self._fragments) > MAX_HEADER_BLOCK:
                raise ConnectionFailure(h2.PROTOCOL_ERROR, "header block too large")
            if flags & h2.END_HEADERS:
                block, self._fragments = bytes(self._fragments), None
                self._on_header_block(self._fragment_stream, self._fragment_flags, block)
        elif kind == h2.SETTINGS:
            if stream_id:
                raise ConnectionFailure(h2.PROTOCOL_ERROR, "SETTINGS on a stream")
            if not flags & h2.ACK:
                self._on_settings(payload)
        elif kind == h2.PING:
            if len(payload) != 8:
                raise ConnectionFailure(h2.FRAME_SIZE_ERROR, "PING payload must be 8 bytes")
            if not flags & h2.ACK:
                self._write(frame(h2.PING, h2.ACK, 0, payload))
        elif kind == h2.WINDOW_UPDATE:
            if len(payload) != 4:
                raise ConnectionFailure(h2.FRAME_SIZE_ERROR, "WINDOW_UPDATE payload must be 4 bytes")
            self._on_window_update(stream_id, int.from_bytes(payload, "big") & 0x7FFFFFFF)
        elif kind == h2.RST_STREAM:
            stream = self._streams.pop(stream_id, None)
            if stream is not None:
                self._blocked.pop(stream_id, None)
                stream.cancel()
        elif kind == h2.GOAWAY:
            self.draining = True  # the client opens no more streams; answer those we have
        elif kind == h2.PUSH_PROMISE:
            raise ConnectionFailure(h2.PROTOCOL_ERROR, "clients must not send PUSH_PROMISE")
        # PRIORITY and unknown frame types are ignored (RFC 9113 section 4.1)

    def _on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0 or stream_id % 2 == 0:
            raise ConnectionFailure(h2.PROTOCOL_ERROR, "HEADERS on an invalid stream id")
        if flags & h2.PADDED:
            if not payload or payload[0] >= len(payload):
                raise ConnectionFailure(h2.PROTOCOL_ERROR, "bad padding")
            payload = payload[1 : len(payload) - payload[0]]
        if flags & h2.PRIORITY:
            payload = payload[5:]
        if flags & h2.END_HEADERS:
            self._on_header_block(stream_id, flags, payload)
        else:
            self._fragments = bytearray(payload)
            self._fragment_stream, self._fragment_flags = stream_id, flags

    def _decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        try:
            return self._headers.decode(block)
        except Exception as exc:  # hpack.HPACKError and whatever hostile bytes provoke
            raise ConnectionFailure(h2.COMPRESSION_ERROR, f"bad header block: {exc}") from None

    def _on_header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        headers = self._decode(block)
        stream = self._streams.get(stream_id)
        if stream is not None:  # trailers from the client: only END_STREAM matters
            if flags & h2.END_STREAM:
                self._end_of_input(stream)
            return
        if stream_id <= self._last_stream_id:
            return  # a stream we already closed
        self._last_stream_id = stream_id
        if self.draining or len(self._streams) >= MAX_CONCURRENT_STREAMS:
            self._write(frame(h2.RST_STREAM, 0, stream_id, struct.pack(">I", h2.REFUSED_STREAM)))
            return
        stream = Stream(stream_id, self._peer_initial_window, RECEIVE_WINDOW)
        self._streams[stream_id] = stream
        self._start(stream, headers)
        if flags & h2.END_STREAM and stream_id in self._streams:
            self._end_of_input(stream)

    def _on_data(self, flags: int, stream_id: int, payload: memoryview) -> None:
        self._received_unacked += len(payload)
        if stream_id == 0:
            raise ConnectionFailure(h2.PROTOCOL_ERROR, "DATA on stream 0")
        stream = self._streams.get(stream_id)
        if stream is None or stream.remote_closed:
            return  # closed or reset by us: the connection credit above is all that matters
        if flags & h2.PADDED:
            if not payload or payload[0] >= len(payload):
                raise ConnectionFailure(h2.PROTOCOL_ERROR, "bad padding")
            payload = payload[1 : len(payload) - payload[0]]
        end = bool(flags & h2.END_STREAM)
        if end and not stream.buffer and stream.requests is None:
            self._end_of_input(stream, payload)  # the usual unary call: one frame, parsed uncopied
            return
        stream.buffer += payload
        stream.received_unacked += len(payload)
        if not end and stream.received_unacked >= RECEIVE_WINDOW // 2:
            self._write(frame(h2.WINDOW_UPDATE, 0, stream_id, struct.pack(">I", stream.received_unacked)))
            stream.received_unacked = 0
        try:
            if stream.requests is not None:  # streaming: hand over each complete message
                for message in take_messages(stream.buffer, self._settings.max_message_size):
                    stream.requests.put_nowait(message)
            elif len(stream.buffer) >= 5:  # unary: refuse an oversized message before it arrives
                take_messages(stream.buffer[:5], self._settings.max_message_size, peek=True)
        except StreamFailure as failure:
            self._finish(stream, failure.code, failure.message)
            return
        if end:
            self._end_of_input(stream)

    def _on_settings(self, payload: bytes) -> None:
        if len(payload) % 6:
            raise ConnectionFailure(h2.FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6")
        for offset in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HI", payload, offset)
            if key == h2.SETTINGS_INITIAL_WINDOW_SIZE:
                if value > h2.MAX_WINDOW:
                    raise ConnectionFailure(h2.FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE too large")
                for stream in self._streams.values():
                    stream.send_window += value - self._peer_initial_window
                self._peer_initial_window = value
            elif key == h2.SETTINGS_MAX_FRAME_SIZE:
                if not h2.DEFAULT_MAX_FRAME <= value < 1 << 24:
                    raise ConnectionFailure(h2.PROTOCOL_ERROR, "MAX_FRAME_SIZE out of range")
                self._peer_max_frame = value
        self._write(frame(h2.SETTINGS, h2.ACK, 0))
        self._flush_blocked()

    def _on_window_update(self, stream_id: int, increment: int) -> None:
        if stream_id == 0:
            if increment == 0 or self._send_window + increment > h2.MAX_WINDOW:
                raise ConnectionFailure(h2.FLOW_CONTROL_ERROR, "bad connection WINDOW_UPDATE")
            self._send_window += increment
        elif (stream := self._streams.get(stream_id)) is not None:
            stream.send_window += increment
        self._flush_blocked()

    # calls --------------------------------------------------------------------------------------
    def _start(self, stream: Stream, headers: list[tuple[bytes, bytes]]) -> None:
        path = b""
        timeout: bytes | None = None
        for name, value in headers:
            if name == b":path":
                path = value
            elif name == b"grpc-timeout":
                timeout = value
        route = self._settings.routes.get(path)
        if route is None:
            self._finish(stream, UNIMPLEMENTED, f"unknown method {path.decode('latin-1')}")
            return
        method, handler, required, denial = route
        if required is not None and required not in headers:
            self._finish(stream, UNAVAILABLE, denial)
            return
        if timeout is not None:
            seconds = grpc_timeout_seconds(timeout)
            if seconds is None:
                self._finish(stream, INVALID_ARGUMENT, "malformed grpc-timeout header")
                return
            loop = asyncio.get_running_loop()
            stream.deadline = loop.call_later(seconds, self._expire, stream)
        stream.method, stream.handler = method, handler
        if method.streaming:
            stream.requests = asyncio.Queue()
            stream.task = asyncio.ensure_future(self._run_stream(stream))

    def _end_of_input(self, stream: Stream, whole: memoryview | None = None) -> None:
        """The client finished sending; `whole`: the unary message's only frame, not buffered."""
        stream.remote_closed = True
        if stream.requests is not None:
            stream.requests.put_nowait(None)
            return
        if stream.method is None or stream.task is not None:
            return
        self._run_message(stream, stream.buffer if whole is None else whole)

    def _run_message(self, stream: Stream, data: bytearray | memoryview) -> None:
        """A unary call's input is complete: `data` must hold exactly one gRPC message."""
        try:
            message = one_message(data, self._settings.max_message_size)
        except StreamFailure as failure:
            self._finish(stream, failure.code, failure.message)
            return
        if stream.method is self._settings.model_infer:
            self._start_infer(stream, message)
        else:
            stream.task = asyncio.ensure_future(self._run_unary(stream, message))

    def _start_infer(self, stream: Stream, message: memoryview) -> None:
        """ModelInfer without a task: decode, queue, and answer from the result's callback."""
        try:
            call = self._settings.rpcs.start_infer(_parse(self._settings.model_infer, message))
        except Exception as exc:
            self._fail(stream, exc)
            return
        stream.task = call.future  # RST_STREAM and deadlines cancel it: the request leaves the queue
        if call.future.done():  # answered at once (a response-cache hit): no callback round
            self._infer_done(stream, call)
            return
        on_done(call.future, lambda _: self._infer_done(stream, call))

    def _infer_done(self, stream: Stream, call: InferCall) -> None:
        try:
            if call.future.cancelled():
                raise asyncio.CancelledError
            chunks = self._settings.rpcs.finish_infer(call)
        except BaseException as exc:
            self._fail(stream, exc)
            return
        self._answer(stream, chunks)

    def _fail(self, stream: Stream, error: BaseException) -> None:
        """Every call's failures end here: its gRPC status, or silence when it was cancelled
        (RST_STREAM: the client is gone) unless its deadline did it."""
        if isinstance(error, asyncio.CancelledError):
            if stream.expired:
                self._finish(stream, DEADLINE_EXCEEDED, "Deadline Exceeded")
            return
        self._finish(stream, *grpc_status(error))

    def _expire(self, stream: Stream) -> None:
        stream.deadline = None
        stream.expired = True
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()
        else:
            self._finish(stream, DEADLINE_EXCEEDED, "Deadline Exceeded")

    async def _run_unary(self, stream: Stream, message: memoryview) -> None:
        method = cast(Method, stream.method)
        try:
            response = await cast(Callable[..., Any], stream.handler)(_parse(method, message))
            self._answer(stream, _serialized(method, response))
        except BaseException as exc:  # CancelledError included: _fail decides what the client hears
            self._fail(stream, exc)

    async def _run_stream(self, stream: Stream) -> None:
        method = cast(Method, stream.method)
        queue = cast(asyncio.Queue[bytes | None], stream.requests)
        malformed: list[InvalidInput] = []

        async def requests() -> AsyncIterator[Any]:
            while (message := await queue.get()) is not None:
                try:
                    yield _parse(method, message)
                except InvalidInput as exc:  # ends the input: answers so far still go out
                    malformed.append(exc)
                    return

        try:
            async for response in cast(Callable[..., Any], stream.handler)(requests()):
                self._send_message(stream, _serialized(method, response))
            if malformed:
                raise malformed[0]
            self._finish(stream, OK, "")
        except BaseException as exc:
            self._fail(stream, exc)

    def _close(self, code: int, reason: str) -> None:
        if self._transport is None:
            return
        logger.debug("closing an HTTP/2 connection: %s", reason)
        goaway = frame(h2.GOAWAY, 0, 0, struct.pack(">II", self._last_stream_id, code) + reason.encode())
        self._send_outgoing()
        self._transport.write(goaway)
        self._transport.close()

    def go_away(self) -> None:
        """Shutdown: refuse new streams, let the open ones finish."""
        self.draining = True
        self._write(frame(h2.GOAWAY, 0, 0, struct.pack(">II", self._last_stream_id, h2.NO_ERROR)))

    @property
    def busy(self) -> bool:
        return bool(self._streams)

    def abort(self) -> None:
        if self._transport is not None:
            self._send_outgoing()
            self._transport.close()


def _parse(method: Method, message: bytes | memoryview) -> Any:
    """The request message, or InvalidInput (INVALID_ARGUMENT) with the parser's complaint."""
    try:
        return method.request_type.FromString(message)
    except Exception as exc:  # DecodeError, or anything hostile bytes provoke
        raise InvalidInput(f"failed to parse the request message: {exc}") from None
    finally:
        if isinstance(message, memoryview):
            message.release()


def _serialized(method: Method, response: Any) -> list[Chunk]:
    return cast(list[Chunk], response) if method.name in PRESERIALIZED else [response.SerializeToString()]


class ConnectionFailure(Exception):
    """A connection error (RFC 9113 section 5.4.1): GOAWAY with `code`, then close."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason
