"""Shared-memory segments and the control socket between the main process and a worker.

Segments are anonymous memory files (Linux `memfd_create`) whose file descriptor travels to the
other process over the control socket (SCM_RIGHTS). They never have a name in /dev/shm, so no exit
path (normal close, crash, kill -9 of either side) can leave one behind: the kernel frees the
memory when the last process holding it exits. Where memfd is missing, a file in /dev/shm (or the
temp dir) named `tritonctl_*` is created and unlinked at once, which gives the same guarantee.

The control socket is a SOCK_SEQPACKET socketpair: message boundaries are kept, descriptors ride
along, and the peer's death reads as end-of-file. A control message is one kind byte and a body:
`J` + an orjson document, or `A` + (arena index, offset, length) of an orjson document written
into the sender's shared memory (for the rare record above MAX_INLINE bytes).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import socket
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

SEGMENT_PREFIX = "tritonctl_"
MAX_INLINE = 60 * 1024  # below the default SO_SNDBUF of Linux, so one send never blocks for long
RECV_BUFFER = MAX_INLINE + 64
ALIGNMENT = 64

_MSG_TRUNC = int(socket.MSG_TRUNC)  # plain int: enum flag arithmetic costs microseconds per message
_ARENA_POINTER = struct.Struct("<IQQ")  # arena index, offset, length


def align(size: int) -> int:
    return (size + ALIGNMENT - 1) & ~(ALIGNMENT - 1)


class Segment:
    """A shared-memory file mapped read-write into this process."""

    def __init__(self, fd: int, size: int, *, keep_fd: bool = True) -> None:
        self.fd = fd
        self.size = size
        self._mmap = mmap.mmap(fd, size)
        self.view = memoryview(self._mmap)
        self._closed = False
        if not keep_fd:  # the map keeps the memory: a thousand models must not hold its descriptor too
            os.close(fd)
            self.fd = -1

    @classmethod
    def create(cls, label: str, size: int) -> Segment:
        size = max(align(size), ALIGNMENT)
        fd = _anonymous_shared_file(f"{SEGMENT_PREFIX}{label}")
        try:
            os.ftruncate(fd, size)
        except OSError:
            os.close(fd)
            raise
        return cls(fd, size)

    @classmethod
    def attach(cls, fd: int) -> Segment:
        """Map a segment another process made (its descriptor is closed: only the maker sends it)."""
        return cls(fd, os.fstat(fd).st_size, keep_fd=False)

    @property
    def closed(self) -> bool:
        return self._closed

    def drop_fd(self) -> None:
        """The descriptor went to the other process (which maps it): the map alone keeps the memory
        here. Python's mmap holds a descriptor of its own, so each one kept is one too many."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def close(self) -> None:
        """Unmap and close; arrays still viewing the memory keep it alive until they are gone."""
        if self._closed:
            return
        self._closed = True
        self.view.release()
        # A model that kept a numpy view of its inputs holds an export: leave the map to the GC then.
        with contextlib.suppress(BufferError):
            self._mmap.close()
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = -1


def _anonymous_shared_file(name: str) -> int:
    if hasattr(os, "memfd_create"):
        return os.memfd_create(name, os.MFD_CLOEXEC)
    directory = "/dev/shm" if Path("/dev/shm").is_dir() else tempfile.gettempdir()
    fd, path = tempfile.mkstemp(prefix=name, dir=directory)
    Path(path).unlink()
    return fd


# --------------------------------------------------------------------------------------------------
# control messages


def encode(
    record: dict[str, Any], spill: Segment | None = None, spill_index: int = 0, spill_at: int = 0
) -> bytes:
    """One control message; a record too large to send inline goes into `spill` at `spill_at`
    (`spill_index` tells the receiver which of its arenas that is)."""
    body = orjson.dumps(record)
    if len(body) <= MAX_INLINE:
        return b"J" + body
    if spill is None or spill_at + len(body) > spill.size:
        raise ValueError(f"control record of {len(body)} bytes does not fit the shared-memory arena")
    spill.view[spill_at : spill_at + len(body)] = body
    return b"A" + _ARENA_POINTER.pack(spill_index, spill_at, len(body))


def spill_size(record: dict[str, Any]) -> int:
    """Arena bytes `encode` will need for this record (0 when it goes inline), with room for a
    few more digits in fields filled in at the last moment."""
    size = len(orjson.dumps(record))
    return 0 if size <= MAX_INLINE - 64 else align(size + 64)


def spilled_arena(message: memoryview | bytes) -> int | None:
    """The arena index a spilled record lies in; None for an inline record."""
    if message[0:1] != b"A":
        return None
    index: int = _ARENA_POINTER.unpack_from(message, 1)[0]
    return index


def decode(message: memoryview | bytes, arenas: Sequence[Segment | None] = ()) -> dict[str, Any]:
    kind = message[0:1]
    if kind == b"J":
        result: dict[str, Any] = orjson.loads(message[1:])
        return result
    if kind == b"A":
        index, offset, length = _ARENA_POINTER.unpack_from(message, 1)
        arena = arenas[index] if index < len(arenas) else None
        if arena is not None:
            result = orjson.loads(arena.view[offset : offset + length])
            return result
    raise ValueError(f"malformed control message (kind {bytes(kind)!r})")


def send(sock: socket.socket, message: bytes, fds: list[int] | None = None) -> None:
    if fds:
        socket.send_fds(sock, [message], fds)
    else:
        sock.send(message)


class Receiver:
    """Reads whole control messages (and passed descriptors) into a reused buffer."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray(RECV_BUFFER)
        self._view = memoryview(self._buffer)
        # an arena + clients' regions (client_inputs.py: 32 at most, client_outputs.py: 12)
        self._ancillary = socket.CMSG_SPACE(64 * 4)

    def receive(self) -> tuple[memoryview, list[int]] | None:
        """The next message and its descriptors; None at end-of-file (the peer is gone).

        Raises BlockingIOError on a non-blocking socket with nothing to read.
        """
        try:
            size, ancillary, flags, _ = self.sock.recvmsg_into([self._buffer], self._ancillary)
        except (ConnectionResetError, BrokenPipeError):
            return None
        fds: list[int] = []
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(data) - len(data) % 4
                fds.extend(struct.unpack(f"{usable // 4}i", data[:usable]))
        if size == 0:
            for fd in fds:
                os.close(fd)
            return None
        if flags & _MSG_TRUNC:
            raise ValueError(f"control message larger than {RECV_BUFFER} bytes")
        return self._view[:size], fds
