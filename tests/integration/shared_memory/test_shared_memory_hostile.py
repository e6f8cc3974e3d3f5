"""System shared memory under hostile input: every refusal is a clear 400 / INVALID_ARGUMENT and the
server still serves afterwards (RELIABILITY.md, the shared-memory threats)."""

import json
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from tests.integration.shared_memory.helpers import (
    NBYTES,
    SHAPE,
    Regions,
    get,
    post,
)
from tests.support.server import RunningServer

pytestmark = pytest.mark.integration


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
        status, text = post(
            server, "/v2/systemsharedmemory/region/evil/register", {"key": key, "offset": 0, "byte_size": 16}
        )
        assert status == 400, text
        assert "shared memory" in json.loads(text)["error"]
    else:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        with pytest.raises(InferenceServerException) as refused:
            client.register_system_shared_memory("evil", key, 16)
        assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert get(server, "/v2/systemsharedmemory/status") == (200, "[]")
    assert get(server, "/v2/health/ready")[0] == 200


def test_symlink_in_dev_shm_is_refused(server: RunningServer) -> None:
    link = Path("/dev/shm") / f"tritonctl_test_link_{uuid.uuid4().hex[:8]}"
    link.symlink_to("/etc/passwd")
    try:
        status, text = post(
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
    status, text = post(
        server,
        "/v2/systemsharedmemory/region/sized/register",
        {"key": key, "offset": offset, "byte_size": byte_size},
    )
    assert status == 400, (why, text)
    assert get(server, "/v2/systemsharedmemory/status") == (200, "[]")


def _infer_json(server: RunningServer, body: dict[str, Any]) -> tuple[int, str]:
    return post(server, "/v2/models/add_sub/infer", body)


def _input(name: str, **parameters: Any) -> dict[str, Any]:
    return {"name": name, "datatype": "FP32", "shape": SHAPE, "parameters": parameters}


def test_hostile_tensor_parameters(server: RunningServer, regions: Regions) -> None:
    key, handle = regions.create("t1", 256)
    shm.set_shared_memory_region(handle, [np.ones(SHAPE, np.float32)])
    assert (
        post(
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
        post(
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
    assert get(server, "/v2/health/ready")[0] == 200


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
