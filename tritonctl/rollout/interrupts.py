"""Ctrl-C (SIGINT) and SIGTERM stop a rollout at once, even in the middle of a canary hold.

Two ways the signal used to be missed until a 60 s hold ended:
- a process started in the background by a script (`cmd &`, many CI runners) inherits SIGINT
  *ignored*, and Python then installs no KeyboardInterrupt handler: Ctrl-C did nothing;
- a signal the kernel hands to one of grpc's threads does not cut the main thread's sleep short.
`Interrupts.installed()` sets handlers for both signals whatever was inherited, and a wakeup fd
that `Interrupts.sleep` selects on, so a hold wakes the moment either arrives on any thread.
"""

from __future__ import annotations

import contextlib
import select
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """An interrupt flag that signal handlers set and `sleep` wakes on."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)

    @property
    def interrupted(self) -> bool:
        return self._event.is_set()

    def interrupt(self) -> None:
        """Ask the rollout to stop (the signal handlers call this; any thread may)."""
        self._event.set()
        with contextlib.suppress(OSError):  # a full wake buffer already wakes the sleeper
            self._wake_write.send(b"\0")

    def sleep(self, seconds: float) -> None:
        """Wait up to `seconds`; raise KeyboardInterrupt as soon as an interrupt arrives."""
        if not self._event.is_set():
            readable, _, _ = select.select([self._wake_read], [], [], max(0.0, seconds))
            if readable:
                with contextlib.suppress(OSError):
                    self._wake_read.recv(4096)
        if self._event.is_set():
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """While inside, SIGINT and SIGTERM interrupt (raise KeyboardInterrupt in the main thread).

        Main thread only (Python runs signal handlers there). An inherited SIG_IGN is overridden
        on purpose: a rollout that was told to stop must put the server back, not run on."""

        def handler(signum: int, frame: FrameType | None) -> None:
            self.interrupt()
            raise KeyboardInterrupt

        previous = {signum: signal.signal(signum, handler) for signum in SIGNALS}
        previous_fd = signal.set_wakeup_fd(self._wake_write.fileno(), warn_on_full_buffer=False)
        try:
            yield
        finally:
            signal.set_wakeup_fd(previous_fd)
            for signum, old in previous.items():
                signal.signal(signum, old)

    def close(self) -> None:
        self._wake_read.close()
        self._wake_write.close()

    def __enter__(self) -> Interrupts:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@contextlib.contextmanager
def interrupts_deferred(notice: Callable[[], None]) -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM off while the server is put back: a half-done rollback helps nobody."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, lambda *_: notice()) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
