"""Shared host processes: many framework models' instances in one process per backend and device;
and worker templates: warm processes that python workers are forked from.

A process per instance costs an interpreter, numpy and the framework (~35 MiB PSS for a tiny ONNX
model); a thousand models do not fit a machine that way. Instances of onnxruntime, pytorch and
tensorrt models therefore run, by default, as threads of one *host* process per (backend, visible
device) (`TRITONCTL_INSTANCE_MODE` `host`, server/repository/instance_mode.py). Each hosted
instance keeps its own control socket and shared-memory arenas, so its channel is the ordinary
`ShmWorkerChannel` and the hot path is the same as a worker process's.

What the process model gave is kept where it matters: a model that crashes (segfault, os._exit)
takes down its host, never the front end; the host's instances then exit like crashed workers and
their supervisors restart them in a fresh host. A hosted model that hangs holds its thread: `kill`
abandons the instance (its socket is shut) without touching the others.

A worker template (`host_for(..., fork=True)`, `host_process.Template`) is the same machinery for
instances that keep a process each (python models): the template has imported the interpreter's
modules, numpy and the backend once; each worker is forked from it (copy-on-write pages shared), so
it starts in milliseconds and holds only what its model adds. Its exit status comes from the
template, which reaps it: a forked worker has ended when the template reports that (or, the
template dead, when the worker's pidfd says it exited), never when we merely sent it SIGKILL; a
killed process runs on until the kernel ends it, which takes a while on a loaded machine.

`HostedProcess` is what a hosted instance's channel holds in place of a `subprocess.Popen`: the
host's pid, and an exit status of the instance itself (its thread's end, or the host's death).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable

from server.workers.shm import Receiver, decode, encode, send

log = logging.getLogger(__name__)

KILLED = -9  # the exit status a killed instance reports (as SIGKILL would)
_HOSTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], Host]] = (
    weakref.WeakKeyDictionary()
)
_PROCESSES: weakref.WeakSet[subprocess.Popen[bytes]] = weakref.WeakSet()


@atexit.register
def _kill_leftover_hosts() -> None:
    _close_hosts_of_ended_loops()
    for process in list(_PROCESSES):
        if process.poll() is None:
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)


class HostedProcess:
    """One hosted instance, seen through the `subprocess.Popen` methods its channel uses."""

    def __init__(self, host: Host, ident: int, parent_sock: socket.socket) -> None:
        # A forked worker's pidfd, from the template's "forked" report (-1: none yet, or no pidfds
        # here): signalling and watching it can never reach another process that reused the pid.
        self._pidfd = -1
        self._pidfd_lock = threading.Lock()  # wait() may poll it from an executor thread
        self._watching = False  # the event loop watches the pidfd (orphaned)
        self._kill_requested = False
        self.host = host
        self.ident = ident
        self.pid = host.pid  # a forked worker's own pid once the template reports it
        # The pid its worker loop watches (it exits when that process is gone): the template that
        # forked it, or the main process (a host's parent).
        self.parent_pid = host.pid if host.fork else os.getpid()
        self.returncode: int | None = None
        # Resident memory its load added to the host; None for a forked worker (its own PSS counts).
        self.memory_bytes: int | None = None if host.fork else 0
        self.gpu_memory_bytes = 0  # GPU memory its load added to the host (NVML; a GPU host only)
        self._sock = parent_sock
        self._ended = threading.Event()
        loop = asyncio.get_running_loop()
        self.loaded: asyncio.Future[None] = loop.create_future()  # thread host: "loaded"; fork: "forked"
        self._exit: asyncio.Future[None] = loop.create_future()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Until the instance has ended (its host's report, on the event loop). A forked worker
        also counts as ended once its pidfd says it exited, so this returns where that report
        cannot arrive (off the loop: atexit); its status then reads KILLED until reported."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ended.wait(0.01 if self._pidfd >= 0 else timeout):
            if self._has_exited():
                break
            if deadline is None or time.monotonic() < deadline:
                continue
            raise subprocess.TimeoutExpired(f"hosted instance {self.ident}", timeout or 0.0)
        return self.returncode if self.returncode is not None else KILLED

    def _has_exited(self) -> bool:
        """A forked worker's process has exited (a zombie or reaped): its pidfd reads readable."""
        with self._pidfd_lock:
            return self._pidfd >= 0 and bool(select.select([self._pidfd], [], [], 0)[0])

    async def wait_exit(self, timeout_s: float) -> int | None:
        """The instance's exit status, waiting up to `timeout_s` (shm_channel.wait_for_exit)."""
        if self.returncode is None and timeout_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._exit), timeout_s)
        return self.returncode

    def kill(self) -> None:
        """A forked worker: SIGKILL (through its pidfd). It has not ended yet: it runs, and holds its
        memory, until the kernel ends it; the template's "ended" report, after it reaps the worker,
        says so (the channel sees its socket close and waits for that status). Before the template
        reported the fork, its socket is shut (the worker reads end-of-file) and the report's
        arrival sends the signal.
        A hosted thread: abandon it (its socket is shut, so the channel sees it exit; the thread
        ends when its model returns); the host and the others go on."""
        if self.returncode is not None:
            return
        if self.host.fork:
            self._kill_requested = True
            if self.pid != self.host.pid:
                self._signal()
            else:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)
            return
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self.ended(KILLED)

    def _signal(self) -> None:
        with self._pidfd_lock, contextlib.suppress(ProcessLookupError):
            if self._pidfd >= 0:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            elif self.returncode is None:  # no pidfd: not reaped yet (unreported), so still this pid
                os.kill(self.pid, signal.SIGKILL)

    def forked(self, pid: int, pidfd: int) -> None:
        """The template forked the worker: its pid and a pidfd of it (-1: none)."""
        self.pid = pid
        if self.returncode is not None:
            if pidfd >= 0:
                os.close(pidfd)
        else:
            self._pidfd = pidfd
            if self._kill_requested:
                self._signal()
        if not self.loaded.done():
            self.loaded.set_result(None)

    def orphaned(self, code: int) -> None:
        """Its host died with `code`. A forked worker outlives its template (it notices within the
        worker's PARENT_POLL_S): kill it now and report it ended once its pidfd says it exited, so
        that its restart does not run beside it."""
        if self.returncode is not None:
            return
        if self._pidfd < 0:
            self.ended(code)
            return
        self._signal()
        self._exit.get_loop().add_reader(self._pidfd, self.ended, code)
        self._watching = True

    def ended(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
        with self._pidfd_lock:
            if self._pidfd >= 0:
                if self._watching:
                    self._exit.get_loop().remove_reader(self._pidfd)
                os.close(self._pidfd)
                self._pidfd = -1
        self._ended.set()
        if not self._exit.done():
            self._exit.set_result(None)
        if not self.loaded.done():
            self.loaded.set_result(None)


class Host:
    """One host process and its control socket (main-process side)."""

    def __init__(self, key: tuple[str, str], env: dict[str, str], *, fork: bool = False) -> None:
        self.key = key
        self.env = env
        self.fork = fork  # a template that forks workers, not a host of threads
        self.process: subprocess.Popen[bytes] | None = None
        self.instances: dict[int, HostedProcess] = {}
        self._ids = itertools.count(1)
        self._control: socket.socket | None = None
        self._receiver: Receiver | None = None
        self._loop = asyncio.get_running_loop()

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    @property
    def alive(self) -> bool:
        return self._control is not None and self.process is not None and self.process.poll() is None

    def start(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "server.workers.host_process", "--fd", str(child.fileno())]
                + (["--fork"] if self.fork else ["--backend", self.key[0]]),
                pass_fds=(child.fileno(),),
                env=self.env,
                stdin=subprocess.DEVNULL,
            )
        except OSError:
            parent.close()
            raise
        finally:
            child.close()
        _PROCESSES.add(self.process)
        parent.setblocking(False)
        self._control = parent
        self._receiver = Receiver(parent)
        self._loop.add_reader(parent.fileno(), self._on_readable)
        what = "worker template" if self.fork else "host process"
        log.info("started %s %d for %s on %s", what, self.process.pid, *self.key)

    def add(self, parent_sock: socket.socket, child_sock: socket.socket) -> HostedProcess:
        """Hand an instance's socket to the host; its worker loop starts on a thread there."""
        assert self._control is not None
        hosted = HostedProcess(self, next(self._ids), parent_sock)
        self.instances[hosted.ident] = hosted
        send(self._control, encode({"op": "add", "id": hosted.ident}), [child_sock.fileno()])
        return hosted

    def _on_readable(self) -> None:
        assert self._receiver is not None
        while True:
            try:
                received = self._receiver.receive()
            except BlockingIOError:
                return
            except (OSError, ValueError):
                received = None
            if received is None:
                self._gone()
                return
            message, fds = received
            record = decode(message)
            hosted = self.instances.get(int(record.get("id", 0)))
            pidfd = fds.pop(0) if fds and hosted is not None and record.get("op") == "forked" else -1
            for fd in fds:
                os.close(fd)
            if hosted is None:
                continue
            if record["op"] == "forked":
                hosted.forked(int(record["pid"]), pidfd)
            elif record["op"] == "loaded":
                hosted.memory_bytes = int(record.get("memory", 0))
                hosted.gpu_memory_bytes = int(record.get("gpu_memory", 0))
                if not hosted.loaded.done():
                    hosted.loaded.set_result(None)
            elif record["op"] == "ended":
                self.instances.pop(hosted.ident, None)
                hosted.ended(int(record.get("code", 1)))

    def _gone(self) -> None:
        """The host died: every instance it held exits with its status."""
        if self._control is None:
            return
        self._loop.remove_reader(self._control.fileno())
        self._control.close()
        self._control = None
        process = self.process
        code = KILLED
        if process is not None:
            try:
                code = process.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
        log.warning(
            "%s %d for %s on %s exited (%s): restarting its %d instance(s)",
            "worker template" if self.fork else "host process",
            self.pid,
            *self.key,
            code,
            len(self.instances),
        )
        instances, self.instances = self.instances, {}
        for hosted in instances.values():
            hosted.orphaned(code)

    def close(self) -> None:
        """End the host (its instances' sockets closed first by their channels)."""
        if self._control is not None:
            self._loop.remove_reader(self._control.fileno())
            self._control.close()
            self._control = None
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)


def host_for(
    backend: str,
    visible_devices: str | None,
    environment: Callable[[], dict[str, str]],
    *,
    fork: bool = False,
) -> Host:
    """The live host of `backend` for `visible_devices` (CUDA_VISIBLE_DEVICES; None: the CPU host),
    with `fork` the template that forks its workers, started if needed with `environment()` (built
    only then: a copy of os.environ per load was a measurable part of loading many models)."""
    loop = asyncio.get_running_loop()
    _close_hosts_of_ended_loops()
    hosts = _HOSTS.setdefault(loop, {})
    key = (f"{backend} (fork)" if fork else backend, visible_devices or "cpu")
    host = hosts.get(key)
    if host is None or not host.alive:
        host = hosts[key] = Host(key, environment(), fork=fork)
        host.start()
    return host


def live_hosts() -> list[Host]:
    """This event loop's live hosts (memory accounting, tests)."""
    with contextlib.suppress(RuntimeError):
        return [host for host in _HOSTS.get(asyncio.get_running_loop(), {}).values() if host.alive]
    return []


def _close_hosts_of_ended_loops() -> None:
    """Close the hosts of event loops that ended without close_hosts() (tests, embedding callers).
    A Host refers to its loop, so the weak key alone never lets them go: their control sockets
    would wait for the collector (a ResourceWarning each) and their processes for exit."""
    for loop in [loop for loop in _HOSTS if loop.is_closed()]:
        for host in _HOSTS.pop(loop).values():
            host.close()


def close_hosts() -> None:
    """End every host of this event loop (server shutdown, after the models closed)."""
    with contextlib.suppress(RuntimeError):
        hosts = _HOSTS.pop(asyncio.get_running_loop(), {})
        for host in hosts.values():
            host.close()
