"""Inputs in client shared memory read by the worker itself (workers/client_inputs.py), and read in the
main process wherever it needs the bytes (shm_regions.materialize): response cache keys, ensembles,
in-process instances, BYTES checks. Unchanged tritonclient, both protocols."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException, serialize_byte_tensor

from tests.integration.shared_memory.helpers import Regions
from tests.support.events import Gate, wait_pending, write_gated_model
from tests.support.models import write_one_step_ensemble, write_python_model
from tests.support.server import RunningServer, start_server

pytestmark = pytest.mark.integration

ROW = 16
ROW_BYTES = ROW * 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("worker-inputs")
    write_python_model(repo, "plain", "identity", dims=[ROW], max_batch_size=8, dynamic_batching=True)
    cached = write_python_model(repo, "cached", "identity", dims=[ROW], max_batch_size=8)
    (cached / "config.pbtxt").write_text(
        (cached / "config.pbtxt").read_text() + "\nresponse_cache { enable: true }\n"
    )
    for mode in ("thread", "inline"):
        parameters = {"TRITONCTL_INSTANCE_MODE": mode}
        write_python_model(repo, mode, "identity", dims=[ROW], max_batch_size=8, parameters=parameters)
    write_python_model(repo, "strings", "strings", dims=[-1], max_batch_size=8, dynamic_batching=True)
    write_one_step_ensemble(repo, "ens", "plain", [ROW])
    with start_server(repo, "--allow-client-shm=true", "--cache-config=local,size=1048576") as running:
        yield running


def _region(regions: Regions, client: Any, name: str, values: np.ndarray) -> tuple[str, Any]:
    key, handle = regions.create(name, values.nbytes)
    shm.set_shared_memory_region(handle, [values])
    client.register_system_shared_memory(name, key, values.nbytes)
    return key, handle


def _shm_input(module: Any, region: str, shape: list[int], datatype: str = "FP32", size: int = 0) -> Any:
    tensor = module.InferInput("INPUT0", shape, datatype)
    tensor.set_shared_memory(region, size or int(np.prod(shape)) * 4)
    return tensor


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("model", ["plain", "thread", "inline"])
def test_inputs_read_from_regions(server: RunningServer, regions: Regions, protocol: str, model: str) -> None:
    """A worker process reads them itself; an in-process instance gets them read in the main process."""
    module: Any = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(server.http_url if protocol == "http" else server.grpc_url)
    values = np.arange(2 * ROW, dtype=np.float32).reshape(2, ROW) + 0.5
    _region(regions, client, "in", values)
    result = client.infer(model, [_shm_input(module, "in", [2, ROW])])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), values)


def test_cache_keys_use_the_region_bytes(server: RunningServer, regions: Regions) -> None:
    """A cached model's key is made of the bytes in the region (read in the main process), so new
    contents in the same region are a miss, and the same values in the body are a hit."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    first = np.full((1, ROW), 3.0, np.float32)
    _, handle = _region(regions, client, "cin", first)
    tensor = _shm_input(grpcclient, "cin", [1, ROW])
    np.testing.assert_array_equal(client.infer("cached", [tensor]).as_numpy("OUTPUT0"), first)
    second = np.full((1, ROW), 4.0, np.float32)
    shm.set_shared_memory_region(handle, [second])
    np.testing.assert_array_equal(client.infer("cached", [tensor]).as_numpy("OUTPUT0"), second)
    body = grpcclient.InferInput("INPUT0", [1, ROW], "FP32")
    body.set_data_from_numpy(first)
    np.testing.assert_array_equal(client.infer("cached", [body]).as_numpy("OUTPUT0"), first)
    stats = client.get_inference_statistics("cached", as_json=True)["model_stats"][0]
    assert int(stats["inference_stats"]["cache_hit"]["count"]) == 1


def test_ensemble_reads_its_inputs_from_regions(server: RunningServer, regions: Regions) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    values = np.linspace(-1, 1, ROW, dtype=np.float32).reshape(1, ROW)
    _region(regions, client, "ein", values)
    tensor = httpclient.InferInput("IN", [1, ROW], "FP32")
    tensor.set_shared_memory("ein", ROW_BYTES)
    np.testing.assert_array_equal(client.infer("ens", [tensor]).as_numpy("OUT"), values)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bytes_inputs_from_regions(server: RunningServer, regions: Regions, protocol: str) -> None:
    """BYTES inputs are read when decoded (the checks count their elements); a truncated one is refused."""
    module: Any = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(server.http_url if protocol == "http" else server.grpc_url)
    words = np.array([[b"alpha", b"beta", b"gamma"]], dtype=np.object_)
    serialized = serialize_byte_tensor(words)
    size = len(serialized.item())  # a 0-d object array holding the bytes, as tritonclient makes it
    key, handle = regions.create("words", size)
    shm.set_shared_memory_region(handle, [serialized])
    client.register_system_shared_memory("words", key, size)
    tensor = _shm_input(module, "words", [1, 3], "BYTES", size)
    answer = client.infer("strings", [tensor]).as_numpy("OUTPUT0")
    assert [bytes(word) for word in answer.ravel()] == [b"ALPHA", b"BETA", b"GAMMA"]
    os.truncate(Path("/dev/shm") / key.lstrip("/"), 4)
    with pytest.raises(InferenceServerException, match="truncated"):
        client.infer("strings", [tensor])


@dataclasses.dataclass
class Held:
    """A server whose model "held" gathers a batch behind a gated two-row request, and what the
    test's requests answered (by label) once the gate opens."""

    running: RunningServer
    gate: Gate
    made: Regions
    client: Any
    answers: dict[str, Any] = dataclasses.field(default_factory=dict)
    threads: list[threading.Thread] = dataclasses.field(default_factory=list)

    def send(self, tensor: Any, label: str, client: Any = None) -> None:
        def run() -> None:
            try:
                self.answers[label] = (client or self.client).infer("held", [tensor]).as_numpy("OUTPUT0")
            except InferenceServerException as error:
                self.answers[label] = error

        thread = threading.Thread(target=run)
        thread.start()
        self.threads.append(thread)

    def release(self) -> None:
        self.gate.open()
        for thread in self.threads:
            thread.join(60)


@contextlib.contextmanager
def held_server(tmp_path: Path) -> Iterator[Held]:
    repo = tmp_path / "repo"
    gate = Gate(tmp_path / "gate")
    batching = {"preferred_batch_size": [2], "max_queue_delay_microseconds": 20_000_000}
    write_gated_model(repo, "held", gate, dims=[ROW], max_batch_size=8, dynamic_batching=batching)
    with start_server(repo, "--allow-client-shm=true") as running:
        held = Held(running, gate, Regions(running), grpcclient.InferenceServerClient(running.grpc_url))
        try:
            # A two-row request (a preferred batch) executes at once and holds the instance.
            first = grpcclient.InferInput("INPUT0", [2, ROW], "FP32")
            first.set_data_from_numpy(np.zeros((2, ROW), np.float32))
            held.send(first, "held")
            gate.wait_started(1)
            yield held
        finally:
            held.made.close()


def test_truncated_after_decode_fails_that_request_only(tmp_path: Path) -> None:
    """A client shrinks its object after the request was checked: the worker's read falls short,
    that request gets an error, the body request batched with it its answer; the server serves on."""
    with held_server(tmp_path) as held:
        client = held.client
        values = np.full((1, ROW), 9.0, np.float32)
        key, _ = _region(held.made, client, "shrinks", values)
        body = grpcclient.InferInput("INPUT0", [1, ROW], "FP32")
        body.set_data_from_numpy(np.full((1, ROW), 5.0, np.float32))
        held.send(body, "body")
        shm_client = grpcclient.InferenceServerClient(held.running.grpc_url)
        held.send(_shm_input(grpcclient, "shrinks", [1, ROW]), "shm", shm_client)
        wait_pending(held.running, "held", 3)
        os.truncate(Path("/dev/shm") / key.lstrip("/"), 8)
        held.release()
        answers = held.answers
        np.testing.assert_array_equal(answers["body"], np.full((1, ROW), 5.0, np.float32))
        assert isinstance(answers["shm"], InferenceServerException), answers["shm"]
        assert "truncated" in answers["shm"].message()
        stats = client.get_inference_statistics("held", as_json=True)["model_stats"][0]
        assert any(int(entry["batch_size"]) == 2 for entry in stats["batch_stats"])  # body + shm
        again = grpcclient.InferInput("INPUT0", [2, ROW], "FP32")
        again.set_data_from_numpy(np.ones((2, ROW), np.float32))
        np.testing.assert_array_equal(client.infer("held", [again]).as_numpy("OUTPUT0"), np.ones((2, ROW)))


def test_unregister_while_queued_keeps_the_input_readable(tmp_path: Path) -> None:
    """Triton #7743 for inputs: the request holds its own descriptor, so a region unregistered (and
    its object unlinked) while the request waits is still read whole when the request runs."""
    with held_server(tmp_path) as held:
        values = np.arange(2 * ROW, dtype=np.float32).reshape(2, ROW) * -1
        _region(held.made, held.client, "goes", values)
        held.send(_shm_input(grpcclient, "goes", [2, ROW]), "shm")
        wait_pending(held.running, "held", 2)
        httpclient.InferenceServerClient(held.running.http_url).unregister_system_shared_memory("goes")
        for handle in held.made.handles:
            shm.destroy_shared_memory_region(handle)
        held.made.handles.clear()
        held.release()
        np.testing.assert_array_equal(held.answers["shm"], values)
