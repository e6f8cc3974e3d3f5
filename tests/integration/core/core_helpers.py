"""Helpers for the core integration tests: the real server, driven by tritonclient."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import psutil
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.support.server import RunningServer


def http_client(server: RunningServer) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.http_url)


def grpc_client(server: RunningServer) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(server.grpc_url)


def infer_identity(
    client: httpclient.InferenceServerClient, model: str, value: float = 1.0
) -> tuple[str, float]:
    """(model version that answered, OUTPUT0[0]) for an identity-like FP32[1, 4] request."""
    data = np.full((1, 4), value, dtype=np.float32)
    tensor = httpclient.InferInput("INPUT0", list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    result = client.infer(model, [tensor])
    output = result.as_numpy("OUTPUT0")
    assert output is not None
    return str(result.get_response()["model_version"]), float(output.ravel()[0])


def index(client: httpclient.InferenceServerClient) -> dict[tuple[str, str], tuple[str, str]]:
    """(name, version) -> (state, reason) of the repository index."""
    return {
        (entry["name"], entry.get("version", "")): (entry.get("state", ""), entry.get("reason", ""))
        for entry in client.get_model_repository_index()
    }


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def worker_processes(server: RunningServer) -> list[psutil.Process]:
    """The live instance worker processes of the server (one per model instance)."""
    try:
        children = psutil.Process(server.process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    workers = []
    for child in children:
        try:
            if "server.workers.main" in " ".join(child.cmdline()):
                workers.append(child)
        except psutil.NoSuchProcess:
            continue
    return workers
