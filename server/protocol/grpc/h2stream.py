"""Per-stream state of the HTTP/2 gRPC server, and the gRPC framing rules it applies."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any

from server.protocol.grpc.service import Method

INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNIMPLEMENTED = 3, 8, 12
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


class StreamFailure(Exception):
    """The call must end with this gRPC status (the connection is fine)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class Stream:
    """One gRPC call on an HTTP/2 connection."""

    __slots__ = (
        "buffer",
        "deadline",
        "expired",
        "handler",
        "headers_sent",
        "id",
        "method",
        "pending",
        "pending_size",
        "received_unacked",
        "remote_closed",
        "requests",
        "send_window",
        "task",
        "trailers",
    )

    def __init__(self, stream_id: int, send_window: int, receive_window: int) -> None:
        self.id = stream_id
        self.send_window = send_window  # credit the client gave us on this stream
        self.received_unacked = 0  # bytes received since we last gave credit back
        self.buffer = bytearray()  # request bytes not yet cut into messages
        # Answer bytes waiting for flow-control credit, as views of the answer's own buffers.
        self.pending: collections.deque[memoryview] = collections.deque()
        self.pending_size = 0
        self.trailers: bytes | None = None  # HPACK block to send once `pending` is out
        self.headers_sent = False
        self.remote_closed = False  # the client sent END_STREAM
        self.method: Method | None = None
        self.handler: Callable[..., Any] | None = None
        self.requests: asyncio.Queue[bytes | None] | None = None  # streaming calls only
        self.task: asyncio.Future[Any] | None = None  # the call's task, or ModelInfer's result future
        self.deadline: asyncio.TimerHandle | None = None
        self.expired = False

    def queue_answer(self, chunk: bytes | bytearray | memoryview) -> None:
        if len(chunk):
            self.pending.append(memoryview(chunk).cast("B"))
            self.pending_size += len(self.pending[-1])

    def take_answer(self, size: int) -> list[memoryview]:
        """The next `size` answer bytes (size <= pending_size), as views: nothing is copied."""
        taken: list[memoryview] = []
        self.pending_size -= size
        while size:
            head = self.pending[0]
            if len(head) <= size:
                taken.append(self.pending.popleft())
                size -= len(head)
            else:
                taken.append(head[:size])
                self.pending[0] = head[size:]
                size = 0
        return taken

    def cancel(self, task: bool = True) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        if task and self.task is not None and not self.task.done():
            self.task.cancel()


def take_messages(buffer: bytearray, max_size: int, peek: bool = False) -> list[bytes]:
    """Cut the complete length-prefixed gRPC messages off the front of `buffer`.

    `peek`: only check the first prefix (oversized or compressed) and consume nothing.
    Raises StreamFailure for a compressed message (we announce no encodings) or one over max_size.
    """
    messages: list[bytes] = []
    offset = 0
    while len(buffer) - offset >= 5:
        if buffer[offset]:
            raise StreamFailure(UNIMPLEMENTED, "compressed messages are not supported by this server")
        length = int.from_bytes(buffer[offset + 1 : offset + 5], "big")
        if length > max_size:
            raise StreamFailure(
                RESOURCE_EXHAUSTED, f"Received message larger than max ({length} vs. {max_size})"
            )
        if peek or len(buffer) - offset - 5 < length:
            break
        with memoryview(buffer) as view:  # one copy (a bytearray slice would add another)
            messages.append(bytes(view[offset + 5 : offset + 5 + length]))
        offset += 5 + length
    if not peek:
        del buffer[:offset]
    return messages


def one_message(data: bytearray | memoryview, max_size: int) -> memoryview:
    """A unary call's whole input, which must be exactly one message: the message, as a view."""
    size = len(data)
    if size < 5 or data[0] or int.from_bytes(data[1:5], "big") != size - 5:
        messages = take_messages(bytearray(data), max_size)  # raises for compressed or oversized
        raise StreamFailure(INVALID_ARGUMENT, f"expected one request message, got {len(messages)}")
    if size - 5 > max_size:
        raise StreamFailure(
            RESOURCE_EXHAUSTED, f"Received message larger than max ({size - 5} vs. {max_size})"
        )
    return memoryview(data)[5:]


def grpc_timeout_seconds(value: bytes) -> float | None:
    """`grpc-timeout` (at most 8 digits and a unit: H M S m u n) in seconds; None when malformed."""
    text = value.decode("latin-1")
    digits, unit = text[:-1], text[-1:]
    if not digits.isdigit() or len(digits) > 8 or unit not in _TIMEOUT_UNITS:
        return None
    return int(digits) * _TIMEOUT_UNITS[unit]
