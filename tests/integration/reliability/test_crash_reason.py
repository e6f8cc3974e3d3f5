"""A crashed worker's requests fail naming its exit code or signal, also when its control socket
reports the death before the kernel reports the exit status (seen on loaded machines).

A stand-in worker closes its socket, then exits with code 3 only when the test releases it, so
the race that flaked test_crash_in_flight_fails_every_request_promptly is played out every time.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest

from server.errors import WorkerCrashed
from server.workers import shm_channel
from server.workers.settings import WorkerOptions
from server.workers.shm_channel import ShmWorkerChannel
from tests.integration.workers.pool import request

pytestmark = pytest.mark.integration

# Reads the exec when told to (argv[2] == "read"), closes its socket, says so, waits for a line
# on stdin, exits with code 3.
_STAND_IN = """
import os, socket, sys
sock = socket.socket(fileno=int(sys.argv[1]))
if sys.argv[2] == "read":
    sock.recv(65536)
sock.close()
print("closed", flush=True)
sys.stdin.readline()
os._exit(3)
"""


ONES = np.ones((1, 2), np.float32)


class StandIn:
    def __init__(self, read_first: bool) -> None:
        self.parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _STAND_IN, str(child.fileno()), "read" if read_first else "-"],
                pass_fds=(child.fileno(),),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        finally:
            child.close()
        self.parent.setblocking(False)

    def wait_closed(self) -> None:
        assert self.process.stdout is not None
        assert self.process.stdout.readline() == b"closed\n"

    def release(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")
        self.process.stdin.flush()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()
        self.parent.close()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    created = asyncio.new_event_loop()
    try:
        yield created
    finally:
        created.close()


def channel_for(stand_in: StandIn) -> ShmWorkerChannel:
    return ShmWorkerChannel(
        model_name="m",
        version=1,
        instance_name="m_0",
        process=stand_in.process,
        sock=stand_in.parent,
        options=WorkerOptions(),
    )


def test_a_send_that_finds_the_socket_closed_names_the_exit_code(loop: asyncio.AbstractEventLoop) -> None:
    """The flake: the second batch is sent after the worker died, before its EOF was read."""
    stand_in = StandIn(read_first=False)
    try:
        stand_in.wait_closed()

        async def crash() -> BaseException:
            channel = channel_for(stand_in)
            submitted = asyncio.ensure_future(channel.submit([request("m", INPUT0=ONES)]))
            await asyncio.sleep(0)  # its send fails at once: the peer's end is closed
            assert not channel.alive and stand_in.process.poll() is None
            stand_in.release()  # ... and only now does the process exit
            try:
                await submitted
            except WorkerCrashed as exc:
                return exc
            raise AssertionError("the batch did not fail")

        crashed = loop.run_until_complete(asyncio.wait_for(crash(), 30))
    finally:
        stand_in.close()
    assert "exited with code 3 while executing 1 request(s)" in str(crashed)


def test_an_exit_status_slower_than_the_socket_still_names_the_exit_code(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A grace far beyond the delay below: only whether the channel waits for the status matters.
    monkeypatch.setattr(shm_channel, "EXIT_STATUS_GRACE_S", 30.0)
    stand_in = StandIn(read_first=True)
    try:

        async def crash() -> tuple[BaseException, str]:
            channel = channel_for(stand_in)
            channel.start_reading()
            submitted = asyncio.ensure_future(channel.submit([request("m", INPUT0=ONES)]))
            await loop.run_in_executor(None, stand_in.wait_closed)
            # The exit comes 1 s after the EOF: a dying process preempted on a busy machine.
            loop.call_later(1.0, stand_in.release)
            try:
                await submitted
            except WorkerCrashed as exc:
                return exc, await channel.exited
            raise AssertionError("the batch did not fail")

        crashed, exit_reason = loop.run_until_complete(asyncio.wait_for(crash(), 60))
    finally:
        stand_in.close()
    assert "exited with code 3 while executing 1 request(s)" in str(crashed)
    assert exit_reason == "exited with code 3"
