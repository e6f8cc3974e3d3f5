"""What integration tests wait on instead of sleeping: a gated model, the pending count, a condition.

A gated model is an identity python model whose executions are held until the test lets them run,
so "the blocker is executing" and "the request is queued behind it" are facts the test observes,
not guesses about how long a sleep takes on a loaded machine:

    gate = Gate(tmp_path / "gate")                      # outside the model repository
    write_gated_model(repo, "blocker", gate, max_batch_size=1, dims=[4], dynamic_batching=True)
    ... send a request ...
    gate.wait_started(1)                                # its execute() has begun, and is held
    wait_pending(server, "blocker", 2)                  # a second request waits in the queue
    gate.allow(1)                                       # the first execution may finish, not the next
    gate.open()                                         # every execution, now and later, runs

Each execute() call appends one line (the first INPUT0 value of each request, JSON) to
`<gate>/started`, then waits until `<gate>/allowed` holds a number >= its own call number.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.models import write_python_model, write_python_source
from tests.support.server import RunningServer

OPEN = 1 << 30  # more executions than any test makes

_PY_GATED = """\
import json
import os
import time

import triton_python_backend_utils as pb_utils

GATE = {gate!r}


def _allowed():
    try:
        with open(os.path.join(GATE, "allowed")) as source:
            return int(source.read() or 0)
    except (OSError, ValueError):
        return 0


class TritonPythonModel:
    def initialize(self, args):
        self.calls = 0

    def execute(self, requests):
        self.calls += 1
        firsts = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            firsts.append(data.ravel()[:1].tolist())
        with open(os.path.join(GATE, "started"), "a") as log:
            log.write(json.dumps(firsts) + "\\n")
        while _allowed() < self.calls:  # the test has no other way in; polling is cheap
            time.sleep(0.005)
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", data)]))
        return responses
"""


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Check `condition` until it holds; fail after `timeout` seconds saying what never happened."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.01)


class Gate:
    """The folder through which a test holds and releases a gated model's executions."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def starts(self) -> list[list[list[float]]]:
        """One entry per execute() call so far: the first INPUT0 value of each of its requests."""
        try:
            text = (self.folder / "started").read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]

    def wait_started(self, count: int, timeout: float = 30.0) -> None:
        """Until `count` executions have begun (counted since the gate was made)."""
        wait_until(lambda: len(self.starts()) >= count, f"{count} execution(s) to start", timeout)

    def allow(self, count: int) -> None:
        """Let the first `count` executions of each instance finish (written atomically)."""
        staging = self.folder / "allowed.tmp"
        staging.write_text(str(count))
        staging.replace(self.folder / "allowed")

    def open(self) -> None:
        self.allow(OPEN)


def write_gated_model(repo: Path, name: str, gate: Gate, **opts: Any) -> Path:
    """An identity python model (INPUT0 -> OUTPUT0, write_python_model's options) held by `gate`."""
    model_dir = write_python_model(repo, name, "identity", **opts)
    return write_python_source(model_dir, _PY_GATED.format(gate=str(gate.folder)), opts.get("version", 1))


def pending_requests(server: RunningServer, model: str, version: str = "1") -> float:
    """nv_inference_pending_request_count of the model: its requests queued or executing."""
    with urllib.request.urlopen(f"http://{server.metrics_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            wanted = {"model": model, "version": version}
            if sample.name == "nv_inference_pending_request_count" and sample.labels == wanted:
                return float(sample.value)
    return 0.0


def wait_pending(server: RunningServer, model: str, count: int, timeout: float = 30.0) -> None:
    """Until at least `count` requests of `model` are queued or executing."""
    wait_until(
        lambda: pending_requests(server, model) >= count, f"{count} pending request(s) of {model}", timeout
    )
