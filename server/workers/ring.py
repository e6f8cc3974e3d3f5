"""A one-way ring of shared memory for tensors sent at any time (streamed responses, BLS calls).

The batch arenas (shm_channel.py) serve one batch per slot, answered in order. Streamed responses
and upcalls come and go at any time, from any thread of the worker, so they get a ring each way:
the producer writes a message's tensors at its head and sends the message (offsets, and the ring
position after it) over the side socket; the consumer copies the tensors out as it reads the
message, in order, and writes that position into the ring's first 8 bytes. The producer reuses
space up to there, with no message back. When the ring is full (the consumer lags) or a message
is larger than it, the producer starts a new, larger ring and sends its descriptor with the
message; the consumer switches to it when it gets there (every earlier message is read by then).
"""

from __future__ import annotations

import struct
import threading
from typing import Any

from server.workers.shm import ALIGNMENT, Segment, align

HEADER = ALIGNMENT  # the consumed position (u64) lives in the first bytes
_POSITION = struct.Struct("<Q")
DEFAULT_RING_SIZE = 1 << 20


class RingWriter:
    """The producer side; `lock` serializes writers (allocation order must equal send order)."""

    def __init__(self, label: str, size: int = DEFAULT_RING_SIZE) -> None:
        self.label = label
        self.initial_size = size
        self.segment: Segment | None = None
        self.head = 0  # bytes written since this ring began (monotonic)
        self.lock = threading.Lock()

    def reserve(self, sizes: list[int]) -> tuple[list[int], int, list[int]]:
        """Offsets for pieces of `sizes` bytes, the ring position after them, and the descriptor
        to send along (a new ring) or []. Call with `lock` held."""
        total = sum(align(size) for size in sizes)
        fds: list[int] = []
        segment = self.segment
        if total == 0:
            return [0] * len(sizes), self.head, fds
        if segment is None or not self._fits(segment, total):
            old = segment.size - HEADER if segment is not None else 0
            capacity = max(self.initial_size, 2 * old, 2 * total)
            if segment is not None:
                segment.close()
            segment = self.segment = Segment.create(self.label, capacity + HEADER)
            self.head = 0
            fds = [segment.fd]
        capacity = segment.size - HEADER
        start = self.head % capacity
        if start + total > capacity:  # never split a message over the end: skip to the start
            self.head += capacity - start
            start = 0
        offsets = []
        position = HEADER + start
        for size in sizes:
            offsets.append(position)
            position += align(size)
        self.head += total
        return offsets, self.head, fds

    def _fits(self, segment: Segment, total: int) -> bool:
        capacity = segment.size - HEADER
        consumed: int = _POSITION.unpack_from(segment.view, 0)[0]
        start = self.head % capacity
        needed = total + (capacity - start if start + total > capacity else 0)
        return self.head + needed - consumed <= capacity

    def write(self, offset: int, data: Any) -> None:
        assert self.segment is not None
        view = self.segment.view
        if isinstance(data, bytes | bytearray | memoryview):
            view[offset : offset + len(data)] = data
        else:  # a numpy array
            view[offset : offset + data.nbytes] = data.reshape(-1).view("u1")

    def close(self) -> None:
        if self.segment is not None:
            self.segment.close()
            self.segment = None


class RingReader:
    """The consumer side: copies pieces out and gives the space back."""

    def __init__(self) -> None:
        self.segment: Segment | None = None

    def attach(self, fds: list[int]) -> None:
        """A new ring arrived with a message: every later piece lies in it."""
        if not fds:
            return
        if self.segment is not None:
            self.segment.close()
        self.segment = Segment.attach(fds[0])

    def read(self, offset: int, size: int) -> bytes:
        if not size:
            return b""
        assert self.segment is not None
        return bytes(self.segment.view[offset : offset + size])

    def consumed(self, position: int) -> None:
        if self.segment is not None:
            _POSITION.pack_into(self.segment.view, 0, position)

    def close(self) -> None:
        if self.segment is not None:
            self.segment.close()
            self.segment = None
