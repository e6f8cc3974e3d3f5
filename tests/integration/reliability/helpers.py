"""Shared pieces of the reliability tests: worker processes of a server, load threads, waits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.support.server import RunningServer

SHM = Path("/dev/shm")


def worker_pids(server: RunningServer) -> set[int]:
    """Pids of the server's live instance worker processes."""
    try:
        children = psutil.Process(server.process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return set()
    pids = set()
    for child in children:
        try:
            if "server.workers.main" in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                pids.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return pids


def shm_segments() -> set[str]:
    """Our named shared-memory files in /dev/shm (the server should never leave one)."""
    return {p.name for p in SHM.iterdir() if p.name.startswith("tritonctl")} if SHM.is_dir() else set()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll until `condition()`; returns the seconds it took, fails the test after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def identity_inputs(value: float = 1.0, width: int = 4) -> list[httpclient.InferInput]:
    data = np.full((1, width), value, dtype=np.float32)
    tensor = httpclient.InferInput("INPUT0", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    return [tensor]


@dataclass
class Outcome:
    model: str
    ok: bool
    seconds: float
    status: str = ""
    message: str = ""


@dataclass
class LoadThreads:
    """Threads that send identity requests to models over HTTP until stopped."""

    server: RunningServer
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self, model: str, threads: int) -> None:
        for _ in range(threads):
            thread = threading.Thread(target=self._run, args=(model,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _run(self, model: str) -> None:
        client = httpclient.InferenceServerClient(self.server.http_url, network_timeout=60)
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                client.infer(model, identity_inputs())
                self.outcomes.append(Outcome(model, True, time.monotonic() - started))
            except InferenceServerException as exc:
                self.outcomes.append(
                    Outcome(model, False, time.monotonic() - started, str(exc.status()), exc.message())
                )
        client.close()

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        assert not any(thread.is_alive() for thread in self._threads), "a load thread hangs"

    def of(self, model: str) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.model == model]
