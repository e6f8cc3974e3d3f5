"""Framework models share one host process per backend and device (server/workers/host.py).

A crash of the host (here: SIGKILL, what a segfaulting model does to it) never takes the front end
down; the host's models come back in a fresh host, and a python model keeps its own process.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
import tritonclient.http as httpclient

from tests.integration.reliability.helpers import wait_for, worker_pids
from tests.support.models import write_onnx_model, write_python_model, write_torchscript_model
from tests.support.server import RunningServer, start_server

ONNX_MODELS = ("onnx_a", "onnx_b", "onnx_c")


def host_pids(server: RunningServer, *, templates: bool = False) -> set[int]:
    """The shared hosts (or, with `templates`, the worker templates) of the server."""
    pids = set()
    for child in psutil.Process(server.process.pid).children(recursive=True):
        try:
            line = child.cmdline()
            if (
                "server.workers.host_process" in line
                and ("--fork" in line) == templates
                and child.status() != psutil.STATUS_ZOMBIE
            ):
                pids.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return pids


def add(server: RunningServer, model: str, value: float) -> np.ndarray:
    client = httpclient.InferenceServerClient(server.http_url)
    data = np.full((1, 4), value, np.float32)
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        tensor = httpclient.InferInput(name, [1, 4], "FP32")
        tensor.set_data_from_numpy(data)
        inputs.append(tensor)
    result = client.infer(model, inputs).as_numpy("OUTPUT0")
    assert result is not None
    return np.asarray(result)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    for name in ONNX_MODELS:
        write_onnx_model(tmp_path, name, "add_sub", dims=[4])
    write_python_model(tmp_path, "py_identity", "identity", dims=[4])
    with start_server(tmp_path) as running:
        yield running


def test_framework_models_share_one_host_and_python_keeps_its_process(server: RunningServer) -> None:
    assert len(host_pids(server)) == 1
    (worker,) = worker_pids(server)  # py_identity's own worker; the ONNX models have none
    (template,) = host_pids(server, templates=True)
    assert psutil.Process(worker).ppid() == template  # forked from the warm python template
    for index, name in enumerate(ONNX_MODELS):
        np.testing.assert_array_equal(add(server, name, index), np.full((1, 4), 2 * index, np.float32))


def test_a_host_crash_restarts_its_models_and_spares_the_front_end(server: RunningServer) -> None:
    (host,) = host_pids(server)
    python_worker = worker_pids(server)
    os.kill(host, signal.SIGKILL)
    client = httpclient.InferenceServerClient(server.http_url)
    wait_for(lambda: host_pids(server) - {host} != set(), 30, "a new host process")
    wait_for(lambda: all(client.is_model_ready(name) for name in ONNX_MODELS), 30, "the models back")
    assert client.is_server_live()
    for name in ONNX_MODELS:
        np.testing.assert_array_equal(add(server, name, 1.0), np.full((1, 4), 2.0, np.float32))
    assert worker_pids(server) == python_worker  # the python model's process was not touched
    assert "restarting its 3 instance(s)" in server.log


@pytest.mark.parametrize("backend", ["onnxruntime", "pytorch"])
def test_the_first_model_in_a_host_is_charged_its_own_memory_not_the_frameworks(
    tmp_path: Path, backend: str
) -> None:
    # What the framework sets up once per process (onnxruntime ~10 MiB, torch ~5 MiB) and the
    # modules every load imports (~7 MiB) are paid when the host starts, not by the first model
    # loaded there (loads run three at a time here): a budget would count it many times over.
    names = ("first", "second", "third")
    for name in names:
        if backend == "onnxruntime":
            write_onnx_model(tmp_path, name, "mlp", in_features=64, hidden=[256, 128], out_features=10)
        else:
            write_torchscript_model(tmp_path, name, "add_sub", dims=[4])
    with start_server(tmp_path) as running:
        client = httpclient.InferenceServerClient(running.http_url)
        for name in names:
            (usage,) = client.get_inference_statistics(name)["model_stats"][0]["memory_usage"]
            assert usage["type"] == "CPU"
            assert 0 < int(usage["byte_size"]) < 2 << 20, name


def test_an_unloaded_instance_closes_its_sockets_itself(tmp_path: Path) -> None:
    # Left to the collector, each unload's side socket cost a ResourceWarning (formatted even when
    # not shown) in the host, which lives on; with the warnings shown, none may appear.
    write_onnx_model(tmp_path, "cycled", "add_sub", dims=[4])
    env = {**os.environ, "PYTHONWARNINGS": "always::ResourceWarning"}
    with start_server(tmp_path, "--model-control-mode=explicit", env=env) as running:
        client = httpclient.InferenceServerClient(running.http_url)
        client.load_model("cycled")
        (host,) = host_pids(running)
        idle_threads = psutil.Process(host).num_threads() - 1  # less the instance's own
        for round_ in range(3):
            np.testing.assert_array_equal(
                add(running, "cycled", round_), np.full((1, 4), 2 * round_, np.float32)
            )
            client.unload_model("cycled")
            wait_for(
                lambda: psutil.Process(host).num_threads() == idle_threads, 30, "the instance's thread gone"
            )
            client.load_model("cycled")
        assert "unclosed" not in running.log


def test_forked_python_workers_share_what_loads_import_with_their_template(tmp_path: Path) -> None:
    # The template imports what a load needs (the repository package, config protos) before it
    # forks, so a worker's own memory is its model's: ~6 MiB of private pages, ~10.5 when each
    # worker imported them itself after the fork.
    for index in range(3):
        write_python_model(tmp_path, f"py_{index}", "identity", dims=[4])
    with start_server(tmp_path) as running:
        workers = worker_pids(running)
        assert len(workers) == 3
        for pid in workers:
            assert psutil.Process(pid).memory_full_info().uss < 8 << 20
