"""Helpers for the rollout tests: a python toy model whose versions differ, background traffic,
and small views of the real server's statistics and index (all through tritonclient)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from tests.support.events import wait_until
from tests.support.models import write_python_model, write_python_source
from tests.support.server import PROJECT_ROOT, RunningServer

MODEL = "ranker"

_HEADER = """\
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
"""

_OFFSET_BODY = """\
    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            out = (data + np.float32({offset})).astype(np.float32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", out)]))
        return responses
"""

_INIT_FAILS_BODY = """\
    def initialize(self, args):
        raise RuntimeError("version {version} cannot start on purpose")

    def execute(self, requests):
        return []
"""

_EXECUTE_RAISES_BODY = """\
    def execute(self, requests):
        raise pb_utils.TritonModelException("version {version} fails every request on purpose")
"""


def write_ranker(repo: Path, loaded: list[int]) -> Path:
    """FP32[4] -> FP32[4] model `ranker` with five versions and policy `specific [loaded]`:

    1 identity; 2 identity plus 1e-7 (equal within tolerance); 3 adds 0.5 (outputs differ);
    4 fails in initialize; 5 raises in execute.
    """
    model_dir = write_python_model(repo, MODEL, "identity", dims=[4], max_batch_size=8)
    bodies = {
        1: _OFFSET_BODY.format(offset=0.0),
        2: _OFFSET_BODY.format(offset=1e-7),
        3: _OFFSET_BODY.format(offset=0.5),
        4: _INIT_FAILS_BODY.format(version=4),
        5: _EXECUTE_RAISES_BODY.format(version=5),
    }
    for version, body in bodies.items():
        write_python_source(model_dir, _HEADER + body, version=version)
    path = model_dir / "config.pbtxt"
    config = text_format.Parse(path.read_text(), mc.ModelConfig())
    config.version_policy.specific.versions[:] = loaded
    path.write_text(text_format.MessageToString(config))
    return model_dir


@dataclass
class Traffic:
    """Threads sending unversioned requests until stopped; counts answers per version and failures."""

    server: RunningServer
    threads: int = 3
    pause_s: float = 0.03
    answered: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Traffic:
        for index in range(self.threads):
            worker = threading.Thread(target=self._run, args=(index,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.answered.values()) + len(self.failures)

    def wait_for_answers(self, *versions: str, more: int = 3, timeout: float = 30.0) -> None:
        """Wait until each of `versions` has answered `more` requests beyond its count now: the
        routing in force has really carried traffic (a fast load must not end a phase unseen)."""
        with self._lock:
            wanted = {version: self.answered[version] + more for version in versions}

        def reached() -> bool:
            with self._lock:
                return all(self.answered[version] >= count for version, count in wanted.items())

        wait_until(reached, f"{more} more answers from version(s) {', '.join(versions)}", timeout)

    def _run(self, index: int) -> None:
        # Half the threads speak gRPC, half HTTP: both front ends route by the weights.
        use_grpc = index % 2 == 0
        module: Any = grpcclient if use_grpc else httpclient
        client = module.InferenceServerClient(self.server.grpc_url if use_grpc else self.server.http_url)
        data = np.arange(4, dtype=np.float32).reshape(1, 4) + index
        try:
            while not self._stop.is_set():
                tensor = module.InferInput("INPUT0", [1, 4], "FP32")
                tensor.set_data_from_numpy(data)
                try:
                    result = client.infer(MODEL, [tensor])
                    response = result.get_response(as_json=True) if use_grpc else result.get_response()
                    with self._lock:
                        self.answered[str(response["model_version"])] += 1
                except Exception as exc:  # every failure is what the tests count
                    with self._lock:
                        self.failures.append(f"{type(exc).__name__}: {exc}")
                time.sleep(self.pause_s)
        finally:
            client.close()


def success_by_version(server: RunningServer) -> dict[str, int]:
    """Successful requests per loaded version of the model (the statistics extension)."""
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        stats = client.get_inference_statistics(MODEL)["model_stats"]
    finally:
        client.close()
    return {entry["version"]: int(entry["inference_stats"]["success"]["count"]) for entry in stats}


def version_states(server: RunningServer) -> dict[str, str]:
    """version -> state of the model in the repository index."""
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        entries = client.get_model_repository_index()
    finally:
        client.close()
    return {e.get("version", ""): e.get("state", "") for e in entries if e["name"] == MODEL}


def worker_pids(server: RunningServer) -> set[int]:
    """PIDs of the server's live instance workers."""
    pids = set()
    for child in psutil.Process(server.process.pid).children(recursive=True):
        try:
            if "server.workers.main" in " ".join(child.cmdline()):
                pids.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return pids


def wait_for(condition: Any, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class CliProcess:
    """A CLI run in its own process whose output lines a test can wait for; killed on exit.

    A reader thread collects stdout (stderr joined), so waits are on lines, never on time."""

    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=PROJECT_ROOT,
            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "COLUMNS": "200"},
        )
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._ended = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def output(self) -> str:
        with self._changed:
            return "".join(self._lines)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self._lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def wait_for_line(self, text: str, timeout: float) -> None:
        """Until a line holds `text`; fails (with the output so far) at the timeout or the end."""
        with self._changed:
            found = self._changed.wait_for(
                lambda: self._ended or any(text in line for line in self._lines), timeout
            )
            if not found or not any(text in line for line in self._lines):
                raise AssertionError(f"no line with {text!r} within {timeout:g}s:\n{''.join(self._lines)}")

    def interrupt(self) -> None:
        self.process.send_signal(signal.SIGINT)

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)  # the rest of the output
        return code

    def __enter__(self) -> CliProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._reader.join(timeout=10)
        assert self.process.stdout is not None
        self.process.stdout.close()
