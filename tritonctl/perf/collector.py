"""The parent side of the load processes: tell them the level, gather their records, cut windows.

`LoadGenerator` owns the processes; `RecordStore` holds the completion records they send, by level
generation, and answers "which requests completed between t0 and t1" once every process has
reported past t1.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from tritonctl.perf.errors import PerfError
from tritonctl.perf.loadgen import WorkerJob, spawn_workers
from tritonctl.perf.settings import LoadLevel

START_TIMEOUT_S = 60.0
FLUSH_TIMEOUT_S = 10.0


@dataclass
class RecordStore:
    """Completion records of the current level generation, in arrival order."""

    generation: int = 0
    starts: list[npt.NDArray[np.int64]] = field(default_factory=list)
    ends: list[npt.NDArray[np.int64]] = field(default_factory=list)
    oks: list[npt.NDArray[np.int8]] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)  # message -> generation that first saw it

    def reset(self, generation: int) -> None:
        self.generation = generation
        self.starts.clear()
        self.ends.clear()
        self.oks.clear()

    def add(self, generations: bytes, starts: bytes, ends: bytes, oks: bytes) -> None:
        if not starts:
            return
        mask = np.frombuffer(generations, dtype=np.int64) == self.generation
        if not mask.any():
            return
        self.starts.append(np.frombuffer(starts, dtype=np.int64)[mask])
        self.ends.append(np.frombuffer(ends, dtype=np.int64)[mask])
        self.oks.append(np.frombuffer(oks, dtype=np.int8)[mask])

    def _columns(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int8]]:
        if not self.starts:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty, np.empty(0, dtype=np.int8)
        # Compact the chunks so repeated queries stay cheap.
        starts, ends, oks = np.concatenate(self.starts), np.concatenate(self.ends), np.concatenate(self.oks)
        self.starts[:], self.ends[:], self.oks[:] = [starts], [ends], [oks]
        return starts, ends, oks

    def window(self, t0: int, t1: int) -> tuple[npt.NDArray[np.int64], int]:
        """(latencies of successes, error count) of requests that completed in [t0, t1)."""
        starts, ends, oks = self._columns()
        inside = (ends >= t0) & (ends < t1)
        good = inside & (oks != 0)
        return (ends[good] - starts[good]).astype(np.int64), int(np.count_nonzero(inside & (oks == 0)))

    def nth_completion(self, t0: int, n: int) -> int | None:
        """End time of the n-th request completed at or after t0, if that many have arrived."""
        _, ends, _ = self._columns()
        after = ends[ends >= t0]
        if after.size < n:
            return None
        return int(np.partition(after, n - 1)[n - 1])

    def first_error(self) -> str:
        for message, generation in self.errors.items():
            if generation == self.generation:
                return message
        return next(iter(self.errors), "")


class LoadGenerator:
    """A set of load processes holding one load level at a time."""

    def __init__(self, jobs: list[WorkerJob]) -> None:
        self.store = RecordStore()
        self._workers = spawn_workers(jobs)
        self._connections = [worker.conn for worker in self._workers]
        self._flushed_until = [0] * len(jobs)
        self._generation = 0
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    @property
    def size(self) -> int:
        return len(self._workers)

    def _wait_ready(self) -> None:
        pending = set(range(len(self._connections)))
        deadline = time.monotonic() + START_TIMEOUT_S
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PerfError("the load generator processes did not start in time")
            for ready in wait([self._connections[i] for i in pending], timeout=remaining):
                conn = cast(Connection, ready)
                index = self._connections.index(conn)
                try:
                    message = conn.recv()
                except EOFError:
                    raise PerfError("a load generator process died while starting") from None
                if message[0] == "failed":
                    raise PerfError(str(message[1]))
                if message[0] == "ready":
                    pending.discard(index)

    def _handle(self, index: int, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "records":
            self._flushed_until[index] = message[1]
            self.store.add(*message[2:])
        elif kind == "error":
            self.store.errors.setdefault(message[2], message[1])

    def pump(self, until_monotonic_ns: int) -> None:
        """Receive records until the given time (CLOCK_MONOTONIC ns)."""
        while True:
            remaining = (until_monotonic_ns - time.monotonic_ns()) / 1e9
            ready = wait(self._connections, timeout=max(remaining, 0))
            for item in ready:
                conn = cast(Connection, item)
                index = self._connections.index(conn)
                try:
                    self._handle(index, conn.recv())
                except EOFError:
                    raise PerfError(f"load generator process {index} died") from None
            if remaining <= 0:
                return

    def wait_flushed(self, t_ns: int) -> None:
        """Receive until every process has reported all its completions up to t_ns."""
        deadline = time.monotonic_ns() + int(FLUSH_TIMEOUT_S * 1e9)
        while min(self._flushed_until) < t_ns:
            if time.monotonic_ns() > deadline:
                raise PerfError("a load generator process stopped reporting")
            self.pump(time.monotonic_ns() + 20_000_000)

    def set_payloads(self, payloads: list[bytes]) -> None:
        """Requests to send from the next level on (a generator can outlive one sweep, as in tune)."""
        for conn in self._connections:
            conn.send(("payloads", payloads))

    def set_level(self, level: LoadLevel) -> None:
        """Switch every process to `level`, split evenly between them; returns at once."""
        self._generation += 1
        self.store.reset(self._generation)
        count = len(self._connections)
        for index, conn in enumerate(self._connections):
            if level.mode == "concurrency":
                total = int(level.value)
                share: float = total // count + (1 if index < total % count else 0)
            else:
                share = level.value / count
            conn.send(("level", self._generation, level.mode, share))

    def idle(self) -> None:
        self._generation += 1
        self.store.reset(self._generation)
        for conn in self._connections:
            with contextlib.suppress(OSError):
                conn.send(("idle", self._generation))

    def close(self) -> None:
        for conn in self._connections:
            with contextlib.suppress(OSError):
                conn.send(("exit",))
        for worker in self._workers:
            try:
                worker.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait(timeout=5)
            worker.conn.close()
        self._workers.clear()
        self._connections.clear()
