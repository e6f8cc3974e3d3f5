"""System shared memory (Triton's extension) driven by unchanged tritonclient over HTTP, gRPC and aio.

Regions are made with `tritonclient.utils.shared_memory` as Triton's own examples do
(simple_*_shm_client.py, *_shm_string_client.py); every test unregisters and destroys its regions,
even when it fails. The hostile cases check the refusal, then that the server still serves.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
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

from tests.support.events import Gate, write_gated_model
from tests.support.models import write_python_model
from tests.support.server import RunningServer, start_server

pytestmark = pytest.mark.integration

SHAPE = [1, 16]
NBYTES = 64


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shm-repo")
    write_python_model(root, "add_sub", "add_sub", dims=[16], max_batch_size=8)
    write_python_model(root, "strings", "strings", dims=[-1], max_batch_size=0)
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[RunningServer]:
    with start_server(repo, "--allow-client-shm=true") as running:
        yield running


class Regions:
    """POSIX shm regions made by tritonclient; destroyed (and unregistered) at the end."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.handles: list[Any] = []
        self.names: list[str] = []

    def create(self, name: str, size: int) -> tuple[str, Any]:
        key = f"/tritonctl_test_{uuid.uuid4().hex[:12]}"
        handle = shm.create_shared_memory_region(name, key, size)
        self.handles.append(handle)
        self.names.append(name)
        return key, handle

    def close(self) -> None:
        with contextlib.suppress(Exception):
            _post(self.server, "/v2/systemsharedmemory/unregister")
        for handle in self.handles:
            with contextlib.suppress(Exception):
                shm.destroy_shared_memory_region(handle)


@pytest.fixture
def regions(server: RunningServer) -> Iterator[Regions]:
    made = Regions(server)
    try:
        yield made
    finally:
        made.close()


def _post(server: RunningServer, path: str, body: Any = None) -> tuple[int, str]:
    data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(f"http://{server.http_url}{path}", data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _get(server: RunningServer, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{server.http_url}{path}", timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _add_sub_regions(regions: Regions, client: Any) -> tuple[np.ndarray, np.ndarray, Any]:
    """input0/input1 in one region each, both outputs in a third (Triton's simple_*_shm_client)."""
    in0 = np.arange(16, dtype=np.float32).reshape(SHAPE)
    in1 = np.full(SHAPE, 2.0, dtype=np.float32)
    key_in0, handle_in0 = regions.create("input0_data", NBYTES)
    key_in1, handle_in1 = regions.create("input1_data", NBYTES)
    key_out, handle_out = regions.create("output_data", 2 * NBYTES)
    shm.set_shared_memory_region(handle_in0, [in0])
    shm.set_shared_memory_region(handle_in1, [in1])
    client.register_system_shared_memory("input0_data", key_in0, NBYTES)
    client.register_system_shared_memory("input1_data", key_in1, NBYTES)
    client.register_system_shared_memory("output_data", key_out, 2 * NBYTES)
    return in0, in1, handle_out


def _shm_tensors(module: Any) -> tuple[list[Any], list[Any]]:
    inputs = [module.InferInput("INPUT0", SHAPE, "FP32"), module.InferInput("INPUT1", SHAPE, "FP32")]
    inputs[0].set_shared_memory("input0_data", NBYTES)
    inputs[1].set_shared_memory("input1_data", NBYTES)
    outputs = [module.InferRequestedOutput("OUTPUT0"), module.InferRequestedOutput("OUTPUT1")]
    outputs[0].set_shared_memory("output_data", NBYTES)
    outputs[1].set_shared_memory("output_data", NBYTES, offset=NBYTES)
    return inputs, outputs


def _check_add_sub(result: Any, in0: np.ndarray, in1: np.ndarray, handle_out: Any) -> None:
    for name in ("OUTPUT0", "OUTPUT1"):
        output = result.get_output(name)
        assert output is not None
        described = (
            output if isinstance(output, dict) else {"datatype": output.datatype, "shape": output.shape}
        )
        assert described["datatype"] == "FP32" and list(described["shape"]) == SHAPE
        if isinstance(output, dict):
            assert "data" not in output  # written into the region, not into the answer
    out0 = shm.get_contents_as_numpy(handle_out, np.float32, SHAPE)
    out1 = shm.get_contents_as_numpy(handle_out, np.float32, SHAPE, offset=NBYTES)
    np.testing.assert_array_equal(out0, in0 + in1)
    np.testing.assert_array_equal(out1, in0 - in1)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_inputs_and_outputs_through_regions(server: RunningServer, regions: Regions, protocol: str) -> None:
    module: Any = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(server.http_url if protocol == "http" else server.grpc_url)
    in0, in1, handle_out = _add_sub_regions(regions, client)
    status = client.get_system_shared_memory_status()
    names = [r["name"] for r in status] if protocol == "http" else list(status.regions)
    assert sorted(names) == ["input0_data", "input1_data", "output_data"]
    inputs, outputs = _shm_tensors(module)
    _check_add_sub(client.infer("add_sub", inputs, outputs=outputs), in0, in1, handle_out)
    # Triton's reuse_infer_objects_client: the same objects again, with new data in the region.
    shm.set_shared_memory_region(regions.handles[0], [in0 * 3])
    _check_add_sub(client.infer("add_sub", inputs, outputs=outputs), in0 * 3, in1, handle_out)
    client.unregister_system_shared_memory("input0_data")
    remaining = client.get_system_shared_memory_status()
    names = [r["name"] for r in remaining] if protocol == "http" else list(remaining.regions)
    assert sorted(names) == ["input1_data", "output_data"]


def test_mixed_inputs_in_and_out_of_shared_memory_grpc(server: RunningServer, regions: Regions) -> None:
    """tritonclient sends no raw_input_contents entry for an input in shared memory."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    in0, in1, handle_out = _add_sub_regions(regions, client)
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
    in0, in1, handle_out = _add_sub_regions(regions, sync)

    async def run() -> None:
        http = httpaio.InferenceServerClient(server.http_url)
        grpc = grpcaio.InferenceServerClient(server.grpc_url)
        try:
            for module, client in ((httpaio, http), (grpcaio, grpc)):
                inputs, outputs = _shm_tensors(module)
                _check_add_sub(await client.infer("add_sub", inputs, outputs=outputs), in0, in1, handle_out)
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
    assert _get(server, "/v2/systemsharedmemory/status") == (200, "[]")
    body = {"key": key, "offset": 0, "byte_size": 256}
    assert _post(server, "/v2/systemsharedmemory/region/r1/register", body) == (200, "")
    assert _post(server, "/v2/systemsharedmemory/region/r1/register", body) == (
        400,
        '{"error":"shared memory region \'r1\' already in manager"}',
    )
    expected = json.dumps([{"name": "r1", "key": key, "offset": 0, "byte_size": 256}], separators=(",", ":"))
    assert _get(server, "/v2/systemsharedmemory/status") == (200, expected)
    assert _get(server, "/v2/systemsharedmemory/region/r1/status") == (200, expected)
    assert _get(server, "/v2/systemsharedmemory/region/nope/status") == (
        404,
        '{"error":"Unable to find system shared memory region: \'nope\'"}',
    )
    assert _post(server, "/v2/systemsharedmemory/region/nope/unregister") == (200, "")
    assert _post(server, "/v2/systemsharedmemory/status")[0] == 405
    status, text = _post(server, "/v2/systemsharedmemory/region/r2/register", {"key": key, "offset": 0})
    assert (status, text) == (400, '{"error":"Shared memory register request has no \'byte_size\' field"}')
    assert _post(server, "/v2/systemsharedmemory/unregister") == (200, "")
    assert _get(server, "/v2/systemsharedmemory/status") == (200, "[]")
    metadata = json.loads(_get(server, "/v2")[1])
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


HOSTILE_KEYS = [
    "../../etc/passwd",
    "/../../etc/passwd",
    "/proc/self/mem",
    "/dev/shm/../../etc/passwd",
    "..",
    ".",
    "",
    "a" * 300,
    "/etc/passwd",
    "bad\x00key",
]


@pytest.mark.parametrize("key", HOSTILE_KEYS)
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_hostile_keys_are_refused(server: RunningServer, protocol: str, key: str) -> None:
    """Nothing but a POSIX shared-memory object can be registered: no paths, no `..`, no /proc."""
    if protocol == "http":
        status, text = _post(
            server, "/v2/systemsharedmemory/region/evil/register", {"key": key, "offset": 0, "byte_size": 16}
        )
        assert status == 400, text
        assert "shared memory" in json.loads(text)["error"]
    else:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        with pytest.raises(InferenceServerException) as refused:
            client.register_system_shared_memory("evil", key, 16)
        assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert _get(server, "/v2/systemsharedmemory/status") == (200, "[]")
    assert _get(server, "/v2/health/ready")[0] == 200


def test_symlink_in_dev_shm_is_refused(server: RunningServer) -> None:
    link = Path("/dev/shm") / f"tritonctl_test_link_{uuid.uuid4().hex[:8]}"
    link.symlink_to("/etc/passwd")
    try:
        status, text = _post(
            server,
            "/v2/systemsharedmemory/region/link/register",
            {"key": "/" + link.name, "offset": 0, "byte_size": 16},
        )
        assert status == 400 and "Unable to open shared memory region" in text
    finally:
        link.unlink()


@pytest.mark.parametrize(
    ("offset", "byte_size", "why"),
    [
        (0, 1024, "larger than the object"),
        (200, 100, "past its end"),
        (0, 0, "empty"),
        (2**63 - 1, 2, "offset + size overflows int64"),
        (-1, 16, "negative offset"),
        ("0", 16, "offset as a string"),
        (0, 1.5, "size as a float"),
        (0, True, "size as a bool"),
    ],
)
def test_register_checks_sizes(
    server: RunningServer, regions: Regions, offset: Any, byte_size: Any, why: str
) -> None:
    key, _ = regions.create("sized", 256)
    status, text = _post(
        server,
        "/v2/systemsharedmemory/region/sized/register",
        {"key": key, "offset": offset, "byte_size": byte_size},
    )
    assert status == 400, (why, text)
    assert _get(server, "/v2/systemsharedmemory/status") == (200, "[]")


def _infer_json(server: RunningServer, body: dict[str, Any]) -> tuple[int, str]:
    return _post(server, "/v2/models/add_sub/infer", body)


def _input(name: str, **parameters: Any) -> dict[str, Any]:
    return {"name": name, "datatype": "FP32", "shape": SHAPE, "parameters": parameters}


def test_hostile_tensor_parameters(server: RunningServer, regions: Regions) -> None:
    key, handle = regions.create("t1", 256)
    shm.set_shared_memory_region(handle, [np.ones(SHAPE, np.float32)])
    assert (
        _post(
            server, "/v2/systemsharedmemory/region/t1/register", {"key": key, "offset": 0, "byte_size": 256}
        )[0]
        == 200
    )
    good = _input("INPUT1", shared_memory_region="t1", shared_memory_byte_size=NBYTES)
    cases = {
        "past the region": _input(
            "INPUT0", shared_memory_region="t1", shared_memory_byte_size=NBYTES, shared_memory_offset=224
        ),
        "huge offset": _input(
            "INPUT0",
            shared_memory_region="t1",
            shared_memory_byte_size=NBYTES,
            shared_memory_offset=2**63 - 1,
        ),
        "negative offset": _input(
            "INPUT0", shared_memory_region="t1", shared_memory_byte_size=NBYTES, shared_memory_offset=-64
        ),
        "no byte size": _input("INPUT0", shared_memory_region="t1"),
        "size as string": _input("INPUT0", shared_memory_region="t1", shared_memory_byte_size="64"),
        "region as number": _input("INPUT0", shared_memory_region=5, shared_memory_byte_size=NBYTES),
        "data too": {
            **_input("INPUT0", shared_memory_region="t1", shared_memory_byte_size=NBYTES),
            "data": [0] * 16,
        },
        "binary too": _input(
            "INPUT0", shared_memory_region="t1", shared_memory_byte_size=NBYTES, binary_data_size=NBYTES
        ),
        "size mismatch": _input("INPUT0", shared_memory_region="t1", shared_memory_byte_size=32),
    }
    for why, tensor in cases.items():
        status, text = _infer_json(server, {"inputs": [tensor, good]})
        assert status == 400, (why, text)
    outputs = {
        "output too small": {"shared_memory_region": "t1", "shared_memory_byte_size": 32},
        "output past the region": {
            "shared_memory_region": "t1",
            "shared_memory_byte_size": NBYTES,
            "shared_memory_offset": 250,
        },
        "output binary too": {
            "shared_memory_region": "t1",
            "shared_memory_byte_size": NBYTES,
            "binary_data": True,
        },
    }
    inputs = [_input("INPUT0", shared_memory_region="t1", shared_memory_byte_size=NBYTES), good]
    for why, parameters in outputs.items():
        status, text = _infer_json(
            server, {"inputs": inputs, "outputs": [{"name": "OUTPUT0", "parameters": parameters}]}
        )
        assert status == 400, (why, text)
    status, text = _infer_json(server, {"inputs": inputs})
    assert status == 200, text
    assert json.loads(text)["outputs"][0]["data"] == [2.0] * 16


def test_truncated_object_is_an_error_not_a_crash(server: RunningServer, regions: Regions) -> None:
    """A client that shrinks its object after registering gets an error; the server keeps serving."""
    key, _ = regions.create("shrinks", 4096)
    assert (
        _post(
            server,
            "/v2/systemsharedmemory/region/shrinks/register",
            {"key": key, "offset": 0, "byte_size": 4096},
        )[0]
        == 200
    )
    fd = os.open(f"/dev/shm/{key.lstrip('/')}", os.O_RDWR)
    try:
        os.ftruncate(fd, 16)
    finally:
        os.close(fd)
    inputs = [
        _input(
            "INPUT0",
            shared_memory_region="shrinks",
            shared_memory_byte_size=NBYTES,
            shared_memory_offset=1024,
        ),
        _input(
            "INPUT1",
            shared_memory_region="shrinks",
            shared_memory_byte_size=NBYTES,
            shared_memory_offset=1024,
        ),
    ]
    status, text = _infer_json(server, {"inputs": inputs})
    assert status == 400 and "truncated" in text, text
    with_output = {
        "inputs": [
            {"name": n, "datatype": "FP32", "shape": SHAPE, "data": [1.0] * 16} for n in ("INPUT0", "INPUT1")
        ],
        "outputs": [
            {
                "name": "OUTPUT0",
                "parameters": {
                    "shared_memory_region": "shrinks",
                    "shared_memory_byte_size": NBYTES,
                    "shared_memory_offset": 2048,
                },
            }
        ],
    }
    status, text = _infer_json(server, with_output)
    assert status == 400 and "truncated" in text, text
    assert _get(server, "/v2/health/ready")[0] == 200


def test_disabled_by_default(repo: Path) -> None:
    """--allow-client-shm off (the default): registering is refused with a clear message."""
    with start_server(repo) as plain:
        status, text = _post(
            plain, "/v2/systemsharedmemory/region/x/register", {"key": "/x", "offset": 0, "byte_size": 16}
        )
        assert status == 403 and "--allow-client-shm" in text
        client = grpcclient.InferenceServerClient(plain.grpc_url)
        tensor = grpcclient.InferInput("INPUT0", SHAPE, "FP32")
        tensor.set_shared_memory("x", NBYTES)
        with pytest.raises(InferenceServerException) as refused:
            client.infer("add_sub", [tensor, tensor])
        assert "--allow-client-shm" in refused.value.message()
        cuda = _post(
            plain,
            "/v2/cudasharedmemory/region/c/register",
            {"raw_handle": {"b64": "AAAA"}, "device_id": 0, "byte_size": 16},
        )
        assert cuda[0] == 403


def test_cuda_shared_memory_needs_a_gpu(server: RunningServer) -> None:
    assert _get(server, "/v2/cudasharedmemory/status") == (200, "[]")
    status, text = _post(
        server,
        "/v2/cudasharedmemory/region/c1/register",
        {"raw_handle": {"b64": "AAAA"}, "device_id": 0, "byte_size": 16},
    )
    assert (status, text) == (
        400,
        '{"error":"\'raw_handle\' must be a valid base64 encoded cudaIpcMemHandle_t"}',
    )
    handle = {"b64": base64.b64encode(bytes(64)).decode()}  # a cudaIpcMemHandle_t is 64 bytes
    status, text = _post(
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
    assert _post(server, "/v2/cudasharedmemory/unregister") == (200, "")


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


def test_hostile_tensor_parameters_grpc(server: RunningServer, regions: Regions) -> None:
    """The same refusals over gRPC (INVALID_ARGUMENT), for inputs and outputs, then a good request."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    key, handle = regions.create("g_t", 256)
    shm.set_shared_memory_region(handle, [np.ones(SHAPE, np.float32)])
    client.register_system_shared_memory("g_t", key, 256)

    def inputs(offset: int = 0, size: int = NBYTES) -> list[Any]:
        made = [
            grpcclient.InferInput("INPUT0", SHAPE, "FP32"),
            grpcclient.InferInput("INPUT1", SHAPE, "FP32"),
        ]
        made[0].set_shared_memory("g_t", size, offset=offset)
        made[1].set_shared_memory("g_t", NBYTES)
        return made

    for offset, size in ((224, NBYTES), (2**63 - 1, NBYTES), (0, 32)):
        with pytest.raises(InferenceServerException) as refused:
            client.infer("add_sub", inputs(offset, size))
        assert refused.value.status() == "StatusCode.INVALID_ARGUMENT", refused.value.message()
    for offset, size in ((250, NBYTES), (0, 32)):
        output = grpcclient.InferRequestedOutput("OUTPUT0")
        output.set_shared_memory("g_t", size, offset=offset)
        with pytest.raises(InferenceServerException) as refused:
            client.infer("add_sub", inputs(), outputs=[output])
        assert refused.value.status() == "StatusCode.INVALID_ARGUMENT", refused.value.message()
    result = client.infer("add_sub", inputs())
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.full(SHAPE, 2.0, np.float32))


def test_descriptors_are_closed_after_requests_and_unregister(
    server: RunningServer, regions: Regions
) -> None:
    """Each region holds one descriptor until unregistered; each output target its own until its
    request ends (errors too): after many requests and an unregister, the server holds no more."""
    fd_dir = Path(f"/proc/{server.process.pid}/fd")
    client = grpcclient.InferenceServerClient(server.grpc_url)
    for _ in range(3):  # warm: the connection, and both arena slots of the worker (memfds) exist
        client.infer("add_sub", _shm_free_inputs())
    before = len(list(fd_dir.iterdir()))
    in0, in1, handle_out = _add_sub_regions(regions, client)
    inputs, outputs = _shm_tensors(grpcclient)
    for _ in range(20):
        _check_add_sub(client.infer("add_sub", inputs, outputs=outputs), in0, in1, handle_out)
    small = grpcclient.InferRequestedOutput("OUTPUT0")
    small.set_shared_memory("output_data", 8)  # too small: refused, its descriptor released
    for _ in range(5):
        with pytest.raises(InferenceServerException):
            client.infer("add_sub", inputs, outputs=[small])
    client.unregister_system_shared_memory()
    assert len(list(fd_dir.iterdir())) <= before


def _shm_free_inputs() -> list[Any]:
    made = [grpcclient.InferInput("INPUT0", SHAPE, "FP32"), grpcclient.InferInput("INPUT1", SHAPE, "FP32")]
    for tensor in made:
        tensor.set_data_from_numpy(np.ones(SHAPE, np.float32))
    return made
