"""Frames out of the lean gRPC server: answers, flow control, trailers (see h2server.py).

`H2Sender` is the half of `H2Connection` that writes: frames queued in one loop iteration leave
in one send (joined when small, as uncopied views with writev when large), a unary answer that fits
the peer's windows goes out as HEADERS + DATA + trailers in one write, and bigger ones wait in the
stream's queue of views for WINDOW_UPDATE credit.
"""

from __future__ import annotations

import asyncio
import struct

from server.protocol.grpc.codec import Chunk
from server.protocol.grpc.h2stream import Stream
from server.vocabulary import h2frames as h2
from server.vocabulary.h2frames import frame, hpack_literal

OK = 0
_RESPONSE_HEADERS = b"\x88" + hpack_literal(31, "application/grpc")  # :status 200, content-type
_OK_TRAILERS = hpack_literal("grpc-status", "0")
_DATA_HEAD = struct.Struct(">BHBBI")  # a frame head: 24-bit length as (high byte, low 16 bits)
_JOIN_LIMIT = 64 << 10  # below this, outgoing frames are joined into one buffer; above, written as views
# Answer bytes a connection may hold unsent, in the transport (the client reads slowly) or waiting
# for its flow-control credit (it gives none): above this we stop reading its new requests until it
# catches up, so a client that never reads cannot make the server buffer without end.
BACKLOG_HIGH = 8 << 20


def _percent_encode(message: str) -> bytes:
    """grpc-message: UTF-8 with bytes outside printable ASCII (and '%') percent-encoded."""
    raw = message.encode("utf-8", "replace")
    return b"".join(bytes([b]) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b for b in raw)


def trailers_block(code: int, message: str) -> bytes:
    if code == OK and not message:
        return _OK_TRAILERS
    block = hpack_literal("grpc-status", str(code))
    return block + (hpack_literal("grpc-message", _percent_encode(message)) if message else b"")


class H2Sender:
    """Writing state and methods of one connection; H2Connection (h2server.py) reads."""

    def __init__(self, max_message_size: int) -> None:
        self._max_message_size = max_message_size
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, Stream] = {}
        self._blocked: dict[int, Stream] = {}  # streams with answer bytes waiting for credit
        self._outgoing: list[Chunk] = []
        self._send_window = h2.DEFAULT_WINDOW  # connection-level credit the client gave us
        self._peer_max_frame = h2.DEFAULT_MAX_FRAME
        self._transport_full = False  # the transport's buffer is above its high-water mark
        self._reading_paused = False

    # backpressure -------------------------------------------------------------------------------
    def pause_writing(self) -> None:
        self._transport_full = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._transport_full = False
        self._update_reading()

    def _update_reading(self) -> None:
        """Read new requests only while this connection's unsent answers stay bounded."""
        backlog = sum(stream.pending_size for stream in self._blocked.values()) if self._blocked else 0
        limit = BACKLOG_HIGH // 2 if self._reading_paused else BACKLOG_HIGH  # hysteresis
        pause = self._transport_full or backlog > limit
        transport = self._transport
        if pause == self._reading_paused or transport is None or transport.is_closing():
            return
        self._reading_paused = pause
        if pause:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def _write(self, *chunks: Chunk) -> None:
        # Frames written in one loop iteration leave in one send() (fewer syscalls under load).
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._send_outgoing)
        self._outgoing.extend(chunks)

    def _send_outgoing(self) -> None:
        chunks, self._outgoing = self._outgoing, []
        if self._transport is None or self._transport.is_closing():
            return
        if sum(len(chunk) for chunk in chunks) <= _JOIN_LIMIT:
            self._transport.write(b"".join(chunks))
        else:  # large tensors go out as they are (writev), uncopied
            self._transport.writelines(chunks)

    def _answer(self, stream: Stream, chunks: list[Chunk]) -> None:
        """A whole unary answer; one write when the windows allow (the usual case)."""
        length = sum(len(chunk) for chunk in chunks)
        if length > self._max_message_size:
            self._finish(stream, 8, f"response larger than the maximum ({self._max_message_size})")
            return
        size = length + 5
        if self._streams.get(stream.id) is stream and size <= min(
            stream.send_window, self._send_window, self._peer_max_frame
        ):
            stream.send_window -= size
            self._send_window -= size
            self._write(
                frame(h2.HEADERS, h2.END_HEADERS, stream.id, _RESPONSE_HEADERS)
                + _DATA_HEAD.pack(size >> 16, size & 0xFFFF, h2.DATA, 0, stream.id)
                + b"\x00"
                + length.to_bytes(4, "big"),
                *chunks,
                frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, stream.id, _OK_TRAILERS),
            )
            self._close_stream(stream)
            return
        self._send_message(stream, chunks)
        self._finish(stream, OK, "")

    def _send_message(self, stream: Stream, chunks: list[Chunk]) -> None:
        if self._streams.get(stream.id) is not stream:
            return
        if not stream.headers_sent:
            stream.headers_sent = True
            self._write(frame(h2.HEADERS, h2.END_HEADERS, stream.id, _RESPONSE_HEADERS))
        length = sum(len(chunk) for chunk in chunks)
        stream.queue_answer(b"\x00" + length.to_bytes(4, "big"))
        for chunk in chunks:
            stream.queue_answer(chunk)
        self._flush_stream(stream)

    def _finish(self, stream: Stream, code: int, message: str) -> None:
        """End the call with its status: trailers after any answer bytes still waiting for credit."""
        if self._streams.get(stream.id) is not stream or stream.trailers is not None:
            return
        if not stream.headers_sent:  # trailers-only answer
            stream.headers_sent = True
            block = _RESPONSE_HEADERS + trailers_block(code, message)
            self._write(frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, stream.id, block))
            self._close_stream(stream)
            return
        stream.trailers = trailers_block(code, message)
        self._flush_stream(stream)

    def _flush_stream(self, stream: Stream) -> None:
        allowed = min(stream.pending_size, stream.send_window, self._send_window)
        if allowed > 0:
            stream.send_window -= allowed
            self._send_window -= allowed
            size = self._peer_max_frame
            while allowed > 0:
                chunk_size = min(size, allowed)
                allowed -= chunk_size
                self._write(
                    _DATA_HEAD.pack(chunk_size >> 16, chunk_size & 0xFFFF, h2.DATA, 0, stream.id),
                    *stream.take_answer(chunk_size),
                )
        if stream.pending_size:
            self._blocked[stream.id] = stream
            self._update_reading()
            return
        self._blocked.pop(stream.id, None)
        if stream.trailers is not None:
            self._write(frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, stream.id, stream.trailers))
            self._close_stream(stream)

    def _flush_blocked(self) -> None:
        for stream in list(self._blocked.values()):
            if self._send_window <= 0:
                break
            self._flush_stream(stream)
        if self._reading_paused:
            self._update_reading()

    def _close_stream(self, stream: Stream) -> None:
        self._streams.pop(stream.id, None)
        self._blocked.pop(stream.id, None)
        if not stream.remote_closed:  # we answered before the client finished sending
            self._write(frame(h2.RST_STREAM, 0, stream.id, struct.pack(">I", h2.NO_ERROR)))
        stream.cancel(task=stream.task is not asyncio.current_task())
