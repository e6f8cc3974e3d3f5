"""System shared memory (Triton's extension) driven by unchanged tritonclient over HTTP, gRPC and aio.

Regions are made with `tritonclient.utils.shared_memory` as Triton's own examples do
(simple_*_shm_client.py, *_shm_string_client.py); every test unregisters and destroys its regions,
even when it fails. The hostile cases are in test_shared_memory_hostile.py.
"""

import asyncio
import base64
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException, deserialize_bytes_tensor, serialize_byte_tensor

from tests.integration.shared_memory.helpers import (
    NBYTES,
    SHAPE,
    Regions,
    add_sub_regions,
    check_add_sub,
    get,
    post,
    shm_free_inputs,
    shm_tensors,
)
from tests.support.events import Gate, write_gated_model
from tests.support.models import write_python_model
from tests.support.server import RunningServer, start_server

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_inputs_and_outputs_through_regions(server: RunningServer, regions: Regions, protocol: str) -> None:
    module: Any = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(server.http_url if protocol == "http" else server.grpc_url)
    in0, in1, handle_out = add_sub_regions(regions, client)
    status = client.get_system_shared_memory_status()
    names = [r["name"] for r in status] if protocol == "http" else list(status.regions)
    assert sorted(names) == ["input0_data", "input1_data", "output_data"]
    inputs, outputs = shm_tensors(module)
    check_add_sub(client.infer("add_sub", inputs, outputs=outputs), in0, in1, handle_out)
    # Triton's reuse_infer_objects_client: the same objects again, with new data in the region.
    shm.set_shared_memory_region(regions.handles[0], [in0 * 3])
    check_add_sub(client.infer("add_sub", inputs, outputs=outputs), in0 * 3, in1, handle_out)
    client.unregister_system_shared_memory("input0_data")
    remaining = client.get_system_shared_memory_status()
    names = [r["name"] for r in remaining] if protocol == "http" else list(remaining.regions)
    assert sorted(names) == ["input1_data", "output_data"]


def test_mixed_inputs_in_and_out_of_shared_memory_grpc(server: RunningServer, regions: Regions) -> None:
    """tritonclient sends no raw_input_contents entry for an input in shared memory."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    in0, in1, handle_out = add_sub_regions(regions, client)
    inputs = [grpcclient.InferInput("INPUT0", SHAPE, "FP32"), grpcclient.InferInput("INPUT1", SHAPE, "FP32")]
    inputs[0].set_data_from_numpy(in0)
    inputs[1].set_shared_memory("input1_data", NBYTES)
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0"), grpcclient.InferRequestedOutput("OUTPUT1")]
    outputs[1].set_shared_memory("output_data", NBYTES, offset=NBYTES)
    result = client.infer("add_sub", inputs, outputs=outputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), in0 + in1)
    np.testing.assert_array_equal(
        shm.get_contents_as_numpy(handle_out, np.float32, SHAPE, offset=NBYTES), in0 - in1
    )


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_strings_in_shared_memory(server: RunningServer, regions: Regions, protocol: str) -> None:
    module: Any = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(server.http_url if protocol == "http" else server.grpc_url)
    words = np.array([b"alpha", b"beta", "gamma \u00e9".encode()], dtype=np.object_)
    serialized = serialize_byte_tensor(words)
    size = len(serialized.item())  # a 0-d object array holding the bytes, as tritonclient makes it
    key_in, handle_in = regions.create("strings_in", size)
    key_out, handle_out = regions.create("strings_out", size)
    shm.set_shared_memory_region(handle_in, [serialized])
    client.register_system_shared_memory("strings_in", key_in, size)
    client.register_system_shared_memory("strings_out", key_out, size)
    tensor = module.InferInput("INPUT0", [3], "BYTES")
    tensor.set_shared_memory("strings_in", size)
    output = module.InferRequestedOutput("OUTPUT0")
    output.set_shared_memory("strings_out", size)
    client.infer("strings", [tensor], outputs=[output])
    answer = shm.get_contents_as_numpy(handle_out, np.object_, [3])
    assert list(answer) == [w.upper() for w in words]
    assert list(deserialize_bytes_tensor(serialized.item())) == list(words)


def test_aio_clients(server: RunningServer, regions: Regions) -> None:
    sync = httpclient.InferenceServerClient(server.http_url)
    in0, in1, handle_out = add_sub_regions(regions, sync)

    async def run() -> None:
        http = httpaio.InferenceServerClient(server.http_url)
        grpc = grpcaio.InferenceServerClient(server.grpc_url)
        try:
            for module, client in ((httpaio, http), (grpcaio, grpc)):
                inputs, outputs = shm_tensors(module)
                check_add_sub(await client.infer("add_sub", inputs, outputs=outputs), in0, in1, handle_out)
            status = await grpc.get_system_shared_memory_status("output_data")
            assert status.regions["output_data"].byte_size == 2 * NBYTES
            assert (await http.get_system_shared_memory_status("output_data"))[0]["byte_size"] == 2 * NBYTES
        finally:
            await http.close()
            await grpc.close()

    asyncio.run(run())


def test_status_register_unregister_bodies(server: RunningServer, regions: Regions) -> None:
    """Bodies, status codes and messages as Triton 2.51 answers them (compared by hand, see README)."""
    key, _ = regions.create("r1", 256)
    assert get(server, "/v2/systemsharedmemory/status") == (200, "[]")
    body = {"key": key, "offset": 0, "byte_size": 256}
    assert post(server, "/v2/systemsharedmemory/region/r1/register", body) == (200, "")
    assert post(server, "/v2/systemsharedmemory/region/r1/register", body) == (
        400,
        '{"error":"shared memory region \'r1\' already in manager"}',
    )
    expected = json.dumps([{"name": "r1", "key": key, "offset": 0, "byte_size": 256}], separators=(",", ":"))
    assert get(server, "/v2/systemsharedmemory/status") == (200, expected)
    assert get(server, "/v2/systemsharedmemory/region/r1/status") == (200, expected)
    assert get(server, "/v2/systemsharedmemory/region/nope/status") == (
        404,
        '{"error":"Unable to find system shared memory region: \'nope\'"}',
    )
    assert post(server, "/v2/systemsharedmemory/region/nope/unregister") == (200, "")
    assert post(server, "/v2/systemsharedmemory/status")[0] == 405
    status, text = post(server, "/v2/systemsharedmemory/region/r2/register", {"key": key, "offset": 0})
    assert (status, text) == (400, '{"error":"Shared memory register request has no \'byte_size\' field"}')
    assert post(server, "/v2/systemsharedmemory/unregister") == (200, "")
    assert get(server, "/v2/systemsharedmemory/status") == (200, "[]")
    metadata = json.loads(get(server, "/v2")[1])
    assert "system_shared_memory" in metadata["extensions"]


def test_grpc_codes(server: RunningServer, regions: Regions) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    key, _ = regions.create("g1", 64)
    client.register_system_shared_memory("g1", key, 64)
    with pytest.raises(InferenceServerException) as exists:
        client.register_system_shared_memory("g1", key, 64)
    assert exists.value.status() == "StatusCode.ALREADY_EXISTS"
    with pytest.raises(InferenceServerException) as missing:
        client.get_system_shared_memory_status("nope")
    assert missing.value.status() == "StatusCode.NOT_FOUND"
    client.unregister_system_shared_memory("nope")  # like Triton: no error
    tensor = grpcclient.InferInput("INPUT0", SHAPE, "FP32")
    tensor.set_shared_memory("nope", NBYTES)
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("add_sub", [tensor, tensor])
    assert unknown.value.status() == "StatusCode.NOT_FOUND"
    assert "Unable to find shared memory region: 'nope'" in unknown.value.message()


def test_disabled_by_default(repo: Path) -> None:
    """--allow-client-shm off (the default): registering is refused with a clear message."""
    with start_server(repo) as plain:
        status, text = post(
            plain, "/v2/systemsharedmemory/region/x/register", {"key": "/x", "offset": 0, "byte_size": 16}
        )
        assert status == 403 and "--allow-client-shm" in text
        client = grpcclient.InferenceServerClient(plain.grpc_url)
        tensor = grpcclient.InferInput("INPUT0", SHAPE, "FP32")
        tensor.set_shared_memory("x", NBYTES)
        with pytest.raises(InferenceServerException) as refused:
            client.infer("add_sub", [tensor, tensor])
        assert "--allow-client-shm" in refused.value.message()
        cuda = post(
            plain,
            "/v2/cudasharedmemory/region/c/register",
            {"raw_handle": {"b64": "AAAA"}, "device_id": 0, "byte_size": 16},
        )
        assert cuda[0] == 403


def test_cuda_shared_memory_needs_a_gpu(server: RunningServer) -> None:
    assert get(server, "/v2/cudasharedmemory/status") == (200, "[]")
    assert "cuda_shared_memory" not in get(server, "/v2")[1]  # listed only where a GPU is seen
    status, text = post(
        server,
        "/v2/cudasharedmemory/region/c1/register",
        {"raw_handle": {"b64": "AAAA"}, "device_id": 0, "byte_size": 16},
    )
    assert (status, text) == (
        400,
        '{"error":"\'raw_handle\' must be a valid base64 encoded cudaIpcMemHandle_t"}',
    )
    handle = {"b64": base64.b64encode(bytes(64)).decode()}  # a cudaIpcMemHandle_t is 64 bytes
    status, text = post(
        server,
        "/v2/cudasharedmemory/region/c1/register",
        {"raw_handle": handle, "device_id": 0, "byte_size": 16},
    )
    assert status == 400 and "needs a GPU" in text, text
    client = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException) as refused:
        client.register_cuda_shared_memory("c1", base64.b64encode(bytes(64)), 0, 16)
    assert refused.value.status() == "StatusCode.FAILED_PRECONDITION"
    assert "needs a GPU" in refused.value.message()
    assert post(server, "/v2/cudasharedmemory/unregister") == (200, "")


def test_unregister_while_in_use_keeps_the_output_writable(tmp_path: Path) -> None:
    """Triton #7743: a region unregistered while a request uses it stays usable until that request
    ends; the answer lands in the client's memory, and the server keeps serving."""
    repo = tmp_path / "repo"
    gate = Gate(tmp_path / "gate")
    write_gated_model(repo, "held", gate, dims=[16], max_batch_size=0)
    with start_server(repo, "--allow-client-shm=true") as running:
        made = Regions(running)
        try:
            key, handle = made.create("held_out", NBYTES)
            # gRPC in the thread: tritonclient.http's gevent pool cannot cross threads.
            client = grpcclient.InferenceServerClient(running.grpc_url)
            client.register_system_shared_memory("held_out", key, NBYTES)
            tensor = grpcclient.InferInput("INPUT0", [16], "FP32")
            tensor.set_data_from_numpy(np.arange(16, dtype=np.float32) + 7)
            output = grpcclient.InferRequestedOutput("OUTPUT0")
            output.set_shared_memory("held_out", NBYTES)
            answers: list[Any] = []
            thread = threading.Thread(
                target=lambda: answers.append(client.infer("held", [tensor], outputs=[output]))
            )
            thread.start()
            gate.wait_started(1)
            other = httpclient.InferenceServerClient(running.http_url)
            other.unregister_system_shared_memory("held_out")
            assert other.get_system_shared_memory_status() == []
            gate.open()
            thread.join(60)
            assert answers, "the held request did not finish"
            np.testing.assert_array_equal(
                shm.get_contents_as_numpy(handle, np.float32, [16]), np.arange(16, dtype=np.float32) + 7
            )
        finally:
            made.close()


def test_outputs_into_shared_memory_do_not_empty_cached_answers(tmp_path: Path) -> None:
    """The worker writes outputs straight into the client's region (workers/client_outputs.py), except
    for a model whose answers are cached: the cache must keep the bytes. A body request after a
    shared-memory one (a cache hit) still gets the whole answer; an uncached model gets it too."""
    repo = tmp_path / "repo"
    for name in ("cached", "plain"):
        write_python_model(repo, name, "identity", dims=[16], max_batch_size=0)
    cached_config = repo / "cached" / "config.pbtxt"
    cached_config.write_text(cached_config.read_text() + "\nresponse_cache { enable: true }\n")
    with start_server(repo, "--allow-client-shm=true", "--cache-config=local,size=1048576") as running:
        made = Regions(running)
        try:
            key, handle = made.create("out", NBYTES)
            client = grpcclient.InferenceServerClient(running.grpc_url)
            client.register_system_shared_memory("out", key, NBYTES)
            values = np.arange(16, dtype=np.float32) * 3
            for model in ("cached", "plain"):
                shm.set_shared_memory_region(handle, [np.zeros(16, np.float32)])
                tensor = grpcclient.InferInput("INPUT0", [16], "FP32")
                tensor.set_data_from_numpy(values)
                output = grpcclient.InferRequestedOutput("OUTPUT0")
                output.set_shared_memory("out", NBYTES)
                client.infer(model, [tensor], outputs=[output])
                np.testing.assert_array_equal(shm.get_contents_as_numpy(handle, np.float32, [16]), values)
                again = client.infer(model, [tensor])  # in the body (a cache hit for `cached`)
                np.testing.assert_array_equal(again.as_numpy("OUTPUT0"), values)
        finally:
            made.close()


def test_descriptors_are_closed_after_requests_and_unregister(
    server: RunningServer, regions: Regions
) -> None:
    """Each region holds one descriptor until unregistered; each output target its own until its
    request ends (errors too): after many requests and an unregister, the server holds no more."""
    fd_dir = Path(f"/proc/{server.process.pid}/fd")
    client = grpcclient.InferenceServerClient(server.grpc_url)
    for _ in range(3):  # warm: the connection, and both arena slots of the worker (memfds) exist
        client.infer("add_sub", shm_free_inputs())
    before = len(list(fd_dir.iterdir()))
    in0, in1, handle_out = add_sub_regions(regions, client)
    inputs, outputs = shm_tensors(grpcclient)
    for _ in range(20):
        check_add_sub(client.infer("add_sub", inputs, outputs=outputs), in0, in1, handle_out)
    small = grpcclient.InferRequestedOutput("OUTPUT0")
    small.set_shared_memory("output_data", 8)  # too small: refused, its descriptor released
    for _ in range(5):
        with pytest.raises(InferenceServerException):
            client.infer("add_sub", inputs, outputs=[small])
    client.unregister_system_shared_memory()
    assert len(list(fd_dir.iterdir())) <= before
