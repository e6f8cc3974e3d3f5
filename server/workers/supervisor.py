"""Starting worker processes and keeping them alive.

`start_worker` spawns `python -m server.workers.main` for one instance (a fresh interpreter, not a
fork of the server: no inherited event loop, threads or sockets), hands it one end of a socketpair,
and waits until its backend has loaded. `InstanceSupervisor` is a WorkerChannel that restarts a
crashed instance with exponential backoff and tells the registry about each state change; after
`max_rapid_crashes` crashes within `rapid_window_s` it gives up and keeps the last reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from server.errors import LoadError, ModelNotReady
from server.vocabulary.instances import KIND_GPU, InstanceSpec
from server.vocabulary.types import InferenceRequest
from server.workers.backend_loading import InstanceLaunch, instance_record
from server.workers.channel import BatchOutcome, WorkerChannel
from server.workers.settings import WorkerOptions
from server.workers.shm import Receiver, decode, encode
from server.workers.shm_channel import (
    EXIT_STATUS_GRACE_S,
    ShmWorkerChannel,
    _describe_exit,
    wait_for_exit,
)

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding `server/`


async def start_worker(
    launch: InstanceLaunch, options: WorkerOptions, *, hosted: bool = False
) -> ShmWorkerChannel:
    """Spawn the instance's worker and wait for its model to load.

    With `hosted`, the instance runs as a thread of its backend's shared host process (host.py)
    instead of a process of its own; the channel is the same.
    Raises LoadError with the backend's own message when loading fails, the process dies while
    loading, or it takes longer than `options.load_timeout_s`.
    """
    from server.repository import config_from_json

    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    process: Any
    try:
        if hosted or options.fork_workers:  # a thread of a shared host, or forked from a warm template
            from server.workers.host import host_for

            host = host_for(
                launch.backend,
                _visible_devices(launch.spec),
                lambda: _worker_environment(launch.spec),
                fork=not hosted,
            )
            process = host.add(parent_sock, child_sock)
        else:
            process = subprocess.Popen(
                [sys.executable, "-m", "server.workers.main", "--fd", str(child_sock.fileno())],
                pass_fds=(child_sock.fileno(),),
                env=_worker_environment(launch.spec),
                stdin=subprocess.DEVNULL,
            )
    except OSError:
        parent_sock.close()
        raise
    finally:
        child_sock.close()  # the worker's end must live only in the worker, or its death goes unseen
    parent_sock.setblocking(False)
    where = launch.label
    try:
        init = {
            **instance_record(launch, options),
            "slots": max(1, options.max_in_flight),
            "shm_default_size": options.shm_default_size,
            "shm_growth_size": options.shm_growth_size,
            "parent_pid": getattr(process, "parent_pid", os.getpid()),
        }
        parent_sock.send(encode(init))
        reply = await _first_reply(parent_sock, options.load_timeout_s)
    except TimeoutError:
        await _stop(process, parent_sock)
        raise LoadError(f"{where} did not finish loading within {options.load_timeout_s:g} s") from None
    except BaseException:
        await _stop(process, parent_sock)
        raise
    if reply is None or reply.get("op") != "ready":
        if reply is None:  # it died while loading: let its exit status, not our kill, say how
            await wait_for_exit(process, EXIT_STATUS_GRACE_S)
        await _stop(process, parent_sock)
        if reply is not None and reply.get("op") == "load_failed":
            raise LoadError(f"{where} failed to load: {reply['error'][1]}")
        raise LoadError(f"{where}: the worker process {_describe_exit(process.returncode)} while loading")
    if hosted or options.fork_workers:  # a hosted load's memory / a forked worker's pid follow
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(process.loaded), options.load_timeout_s)
    channel = ShmWorkerChannel(
        model_name=launch.model_name,
        version=launch.version,
        instance_name=launch.spec.name,
        process=process,
        sock=parent_sock,
        options=options,
    )
    if "config_json" in reply:  # the python model's auto_complete_config changed it
        channel.completed_config = config_from_json(reply["config_json"])
    channel.start_reading()
    return channel


def _worker_environment(spec: InstanceSpec) -> dict[str, str]:
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = _PACKAGE_ROOT + (os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"  # a model's print() reaches the server log when it happens
    devices = _visible_devices(spec)
    if devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = devices
    return env


def _visible_devices(spec: InstanceSpec) -> str | None:
    """CUDA_VISIBLE_DEVICES for the instance's process; None: leave the server's own."""
    if spec.kind == KIND_GPU and spec.device_id is not None:
        from server.vocabulary.gpus import cuda_visible_devices_value, discover_gpus

        return cuda_visible_devices_value(spec.device_id, discover_gpus())
    return spec.cuda_visible_devices


async def _first_reply(sock: socket.socket, timeout_s: float) -> dict[str, Any] | None:
    loop = asyncio.get_running_loop()
    receiver = Receiver(sock)
    arrived: asyncio.Future[dict[str, Any] | None] = loop.create_future()

    def on_readable() -> None:
        try:
            received = receiver.receive()
        except BlockingIOError:
            return
        if arrived.done():
            return
        if received is None:
            arrived.set_result(None)
        else:
            for fd in received[1]:
                os.close(fd)
            arrived.set_result(decode(received[0]))

    loop.add_reader(sock.fileno(), on_readable)
    try:
        return await asyncio.wait_for(arrived, timeout_s)
    finally:
        loop.remove_reader(sock.fileno())


async def _stop(process: subprocess.Popen[bytes], sock: socket.socket) -> None:
    """Kill a worker that did not load and wait (up to 5 s) until it has ended, without blocking
    the event loop: a forked worker's end is its template's report, which the loop reads."""
    sock.close()
    if process.poll() is None:
        process.kill()
    await wait_for_exit(process, 5.0)


StateCallback = Callable[[str, str, str], None]  # (instance name, state, reason)


class InstanceSupervisor(WorkerChannel):
    """Keeps one instance running: restarts it after a crash, with exponential backoff.

    States: LOADING -> READY -> RESTARTING -> READY ... or FAILED (gave up) / STOPPED (closed).
    """

    def __init__(
        self,
        start: Callable[[], Awaitable[ShmWorkerChannel]],
        instance_name: str,
        on_state_change: StateCallback | None = None,
        *,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_rapid_crashes: int = 5,
        rapid_window_s: float = 60.0,
    ) -> None:
        self.instance_name = instance_name
        self._start = start
        self._on_state_change = on_state_change
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._max_rapid_crashes = max_rapid_crashes
        self._rapid_window_s = rapid_window_s
        self._channel: ShmWorkerChannel | None = None
        self._crash_times: list[float] = []
        self._watch_task: asyncio.Task[None] | None = None
        self.state = "LOADING"
        self.reason = ""
        self.restarts = 0

    @classmethod
    async def launch(
        cls,
        launch: InstanceLaunch,
        options: WorkerOptions,
        on_state_change: StateCallback | None = None,
        *,
        hosted: bool = False,
        **policy: float,
    ) -> InstanceSupervisor:
        """Start a supervised instance; raises LoadError if the first load fails."""

        async def start() -> ShmWorkerChannel:
            return await start_worker(launch, options, hosted=hosted)

        supervisor = cls(start, launch.spec.name, on_state_change, **policy)  # type: ignore[arg-type]
        await supervisor.start()
        return supervisor

    @property
    def channel(self) -> ShmWorkerChannel | None:
        return self._channel

    @property
    def incarnation(self) -> object:
        return self._channel if self._channel is not None else self

    @property
    def alive(self) -> bool:
        return self.state == "READY" and self._channel is not None and self._channel.alive

    @property
    def model_ready(self) -> bool:
        return self._channel is None or self._channel.model_ready

    async def start(self) -> None:
        try:
            self._channel = await self._start()
        except LoadError as exc:
            self._set_state("FAILED", exc.message)
            raise
        self.completed_config = self._channel.completed_config
        self.max_in_flight = self._channel.max_in_flight
        self._set_state("READY", "")
        self._watch_task = asyncio.get_running_loop().create_task(self._watch())

    async def submit(self, requests: list[InferenceRequest]) -> BatchOutcome:
        channel = self._channel
        if channel is None or self.state != "READY":
            why = f": {self.reason}" if self.reason else ""
            raise ModelNotReady(f"instance '{self.instance_name}' is {self.state.lower()}{why}")
        return await channel.submit(requests)

    def submit_now(self, requests: list[InferenceRequest]) -> asyncio.Future[BatchOutcome] | None:
        channel = self._channel
        if channel is None or self.state != "READY":
            return None  # `submit` raises what the state says
        return channel.submit_now(requests)

    async def _watch(self) -> None:
        while self._channel is not None:
            reason = await asyncio.shield(self._channel.exited)
            if self.state == "STOPPED":
                return
            while True:  # restart until a start succeeds or we give up
                now = time.monotonic()
                self._crash_times = [t for t in self._crash_times if now - t < self._rapid_window_s]
                self._crash_times.append(now)
                if len(self._crash_times) >= self._max_rapid_crashes:
                    self._set_state(
                        "FAILED",
                        f"gave up after {len(self._crash_times)} crashes within {self._rapid_window_s:g} s; "
                        f"last: {reason}",
                    )
                    self._channel = None
                    return
                self._set_state("RESTARTING", reason)
                delay = min(self._backoff_initial_s * 2 ** (len(self._crash_times) - 1), self._backoff_max_s)
                await asyncio.sleep(delay)
                if self.state == "STOPPED":
                    return
                try:
                    self._channel = await self._start()
                except LoadError as exc:
                    reason = exc.message
                    continue
                self.restarts += 1
                self._set_state("READY", "")
                break

    def _set_state(self, state: str, reason: str) -> None:
        self.state, self.reason = state, reason
        if self._on_state_change is not None:
            self._on_state_change(self.instance_name, state, reason)

    def kill(self) -> None:
        """SIGKILL the current worker. While closing, that ends it; otherwise it counts as a crash
        and the instance is restarted like after any other."""
        if self._channel is not None:
            self._channel.kill()

    async def close(self) -> None:
        if self.state == "STOPPED":
            return
        self._set_state("STOPPED", self.reason if self.state == "FAILED" else "")
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
        if self._channel is not None:
            await self._channel.close()
        # The callback closes over the version's scheduler, whose pool holds this supervisor:
        # dropped here, a closed instance is freed at once instead of by the cycle collector.
        self._on_state_change = None
