"""Load generator processes: each runs an asyncio loop that keeps requests flowing and timestamps them.

The parent (see `LoadGenerator`) tells every process which load level to hold; a process sends back
batches of completion records (level generation, start ns, end ns, ok) every few tens of
milliseconds, with the time up to which its records are complete. Timestamps are CLOCK_MONOTONIC,
which all processes on one host share, so the parent can cut measurement windows across them.

Closed loop (`concurrency`): each slot sends its next request when the previous one completes;
latency runs from the send. Open loop (`request_rate`): requests are scheduled on a fixed or
Poisson timetable whatever the server does; latency runs from the *scheduled* time, so a server
(or generator) that falls behind shows it in the latency instead of hiding it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from array import array
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from tritonctl.perf.sequences import SequencePlan, SequenceSource, with_sequence
from tritonctl.perf.transport import Sender, TransportError, make_sender

FLUSH_INTERVAL_S = 0.05
MAX_ERROR_MESSAGES = 5


@dataclass(frozen=True)
class WorkerJob:
    """What one load process needs; pickled to it at start."""

    protocol: str
    url: str
    payloads: list[bytes]
    index: int
    count: int
    distribution: str = "constant"
    seed: int = 0
    grpc_client: str = "raw"
    sequence: SequencePlan | None = None  # a sequence model: each closed slot sends sequences


class _Recorder:
    """Completion records kept in flat arrays until the next flush (cheap appends on the hot path)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._reset()
        self._errors: dict[str, int] = {}

    def _reset(self) -> None:
        self.generations = array("q")
        self.starts = array("q")
        self.ends = array("q")
        self.oks = array("b")

    def add(self, generation: int, start: int, end: int, error: str | None) -> None:
        self.generations.append(generation)
        self.starts.append(start)
        self.ends.append(end)
        self.oks.append(error is None)
        if error is not None and len(self._errors) < MAX_ERROR_MESSAGES and error not in self._errors:
            self._errors[error] = generation
            self._conn.send(("error", generation, error))

    def flush(self) -> None:
        # Every record whose end time was taken before `now` is already appended (one thread).
        now = time.monotonic_ns()
        batch = (self.generations, self.starts, self.ends, self.oks)
        self._reset()
        self._conn.send(("records", now, *(part.tobytes() for part in batch)))


class _Worker:
    def __init__(self, job: WorkerJob, conn: Connection) -> None:
        import numpy as np

        self.job = job
        self.conn = conn
        self.sender: Sender = make_sender(job.protocol, job.url, job.grpc_client)
        self.recorder = _Recorder(conn)
        self.generation = 0
        self.running = True
        self.payloads = job.payloads
        self.next_payload = job.index
        self.in_flight: set[asyncio.Task[Any]] = set()
        self.rng = np.random.default_rng(job.seed + 7919 * job.index)
        self.sequences = (
            SequenceSource(job.sequence, job.index, job.count, job.seed) if job.sequence is not None else None
        )

    def _payload(self) -> bytes:
        payloads = self.payloads
        payload = payloads[self.next_payload % len(payloads)]
        self.next_payload += 1
        return payload

    async def _one(self, generation: int, start: int, payload: bytes | None = None) -> bool:
        try:
            error = await self.sender.send(payload if payload is not None else self._payload())
        except TransportError as exc:
            error = str(exc)
        except Exception as exc:  # a bug must show up as failed requests, not as a silent stall
            error = f"{type(exc).__name__}: {exc}"
        self.recorder.add(generation, start, time.monotonic_ns(), error)
        return error is None

    async def _closed_slot(self, generation: int) -> None:
        if self.sequences is not None:
            await self._sequence_slot(generation, self.sequences)
            return
        while self.generation == generation:
            if not await self._one(generation, time.monotonic_ns()):
                await asyncio.sleep(0.001)  # a refusing server must not turn the generator into a spin loop

    async def _sequence_slot(self, generation: int, sequences: SequenceSource) -> None:
        """One live sequence at a time: its requests in order, each after the previous answer."""
        protocol = self.job.protocol
        while self.generation == generation:
            corrid, length = sequences.new_sequence()
            for step in range(length):
                payload = with_sequence(self._payload(), protocol, corrid, step == 0, step == length - 1)
                if not await self._one(generation, time.monotonic_ns(), payload):
                    await asyncio.sleep(0.001)
                    break  # a failed sequence is abandoned; the next one STARTs afresh
            # A level that ends mid-sequence still finishes it (END frees the server's slot).

    async def _open_schedule(self, generation: int, rate: float) -> None:
        # `rate` is this process's share; constant schedules of the processes interleave evenly.
        interval = 1e9 / rate
        poisson = self.job.distribution == "poisson"
        due = time.monotonic_ns() + (0.0 if poisson else interval * self.job.index / self.job.count)
        while self.generation == generation:
            now = time.monotonic_ns()
            while due <= now:
                self._keep(asyncio.ensure_future(self._one(generation, int(due))))
                due += float(self.rng.exponential(interval)) if poisson else interval
            # A plain sleep: the loop's timers are precise enough, and spinning until the due time
            # would take CPU from a server that shares the machine. Lateness counts as latency.
            await asyncio.sleep(max(due - time.monotonic_ns(), 0) / 1e9)

    def _keep(self, task: asyncio.Task[Any]) -> None:
        # The loop holds tasks weakly: keep a reference until each one finishes.
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    def _start_level(self, generation: int, mode: str, value: float) -> None:
        self.generation = generation
        if mode == "concurrency":
            for _ in range(int(value)):
                self._keep(asyncio.ensure_future(self._closed_slot(generation)))
        elif value > 0:
            self._keep(asyncio.ensure_future(self._open_schedule(generation, value)))

    def _on_command(self) -> None:
        while self.conn.poll():
            message = self.conn.recv()
            if message[0] == "level":
                self._start_level(message[1], message[2], message[3])
            elif message[0] == "payloads":
                self.payloads = message[1]
            elif message[0] == "idle":
                self.generation = message[1]
            elif message[0] == "exit":
                self.running = False

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await self.sender.start()
        except TransportError as exc:
            self.conn.send(("failed", str(exc)))
            return
        self.conn.send(("ready",))
        loop.add_reader(self.conn.fileno(), self._on_command)
        try:
            while self.running:
                await asyncio.sleep(FLUSH_INTERVAL_S)
                self.recorder.flush()
        finally:
            loop.remove_reader(self.conn.fileno())
            self.generation = -1
            for task in list(self.in_flight):
                task.cancel()
            with contextlib.suppress(Exception):
                await self.sender.close()


def worker_main(conn: Connection) -> None:
    """Entry point of a load process: the first message on `conn` is its WorkerJob."""
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        runner = asyncio.run
    try:
        job = conn.recv()
        runner(_Worker(job, conn).run())
    except (KeyboardInterrupt, BrokenPipeError, EOFError, ConnectionResetError):
        pass
    finally:
        conn.close()
    # Records are flushed and the parent has let go: skip the slow interpreter and gRPC teardown.
    os._exit(0)


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    conn: Connection


def spawn_workers(jobs: list[WorkerJob]) -> list[WorkerProcess]:
    """Start one `python -m tritonctl.perf.loadgen` per job, talking over a socket pair.

    A plain subprocess rather than multiprocessing's spawn: that one re-imports the caller's main
    module, which breaks under pytest, notebooks and scripts without a `__main__` guard.
    """
    import tritonctl

    package_root = str(Path(tritonctl.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    started = []
    for job in jobs:
        parent_sock, child_sock = socket.socketpair()
        child_fd = child_sock.fileno()
        process = subprocess.Popen(
            [sys.executable, "-m", "tritonctl.perf.loadgen", str(child_fd)], pass_fds=(child_fd,), env=env
        )
        child_sock.close()
        conn = Connection(parent_sock.detach())
        conn.send(job)
        started.append(WorkerProcess(process, conn))
    return started


if __name__ == "__main__":
    worker_main(Connection(int(sys.argv[1])))
