"""Lingering close for a request refused while its client may still be sending (as nginx does).

Closing a socket with unread input makes the kernel send RST, and a client still in its blocking
send of the body (urllib, requests, tritonclient) then sees ConnectionResetError instead of our
400 and its message. So after the answer the connection is half-closed (FIN after the answer) and
whatever arrives is read and dropped, never buffered, until the client closes, or `budget` bytes,
or LINGER_SECONDS after the answer: then it is closed.
"""

from __future__ import annotations

import asyncio

# How long a refused connection is drained after its answer is sent.
LINGER_SECONDS = 5.0
# Discarded beyond the rest of the declared body (it may be chunked, or a head that never ends).
LINGER_SLACK = 1 << 20
# At most this much of a declared body is drained; past it the client gets its reset.
LINGER_MAX_BODY = 256 << 20


def linger_budget(declared_rest: int | None) -> int:
    """Bytes to discard: the rest of a declared body (capped), plus LINGER_SLACK."""
    if declared_rest is None or declared_rest < 0:
        return LINGER_SLACK
    return min(declared_rest, LINGER_MAX_BODY) + LINGER_SLACK


class Linger:
    """The discarding state of one refused connection (see the module docstring)."""

    __slots__ = ("_answered", "_budget", "_timer", "_transport")

    def __init__(self, transport: asyncio.Transport, budget: int) -> None:
        self._transport = transport
        self._budget = budget
        self._timer: asyncio.TimerHandle | None = None
        self._answered = False

    def discard(self, data: bytes) -> None:
        self._budget -= len(data)
        if self._budget >= 0:
            return
        if self._answered:
            self._transport.close()
        else:  # the answer still waits for earlier pipelined requests: read nothing more until then
            self._transport.pause_reading()

    def answered(self, loop: asyncio.AbstractEventLoop) -> None:
        """The answer is written: send FIN after it and drain for LINGER_SECONDS at most."""
        self._answered = True
        transport = self._transport
        if self._budget < 0 or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()  # sent once the answer is flushed; the client reads it, then EOF
        self._timer = loop.call_later(LINGER_SECONDS, transport.close)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
