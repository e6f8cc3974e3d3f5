"""Regions made the way Triton's own examples make them (always destroyed), and small helpers of
the shared-memory tests."""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
import uuid
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.utils.shared_memory as shm

from tests.support.server import RunningServer

SHAPE = [1, 16]
NBYTES = 64


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
            post(self.server, "/v2/systemsharedmemory/unregister")
        for handle in self.handles:
            with contextlib.suppress(Exception):
                shm.destroy_shared_memory_region(handle)


def post(server: RunningServer, path: str, body: Any = None) -> tuple[int, str]:
    data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(f"http://{server.http_url}{path}", data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def get(server: RunningServer, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{server.http_url}{path}", timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def add_sub_regions(regions: Regions, client: Any) -> tuple[np.ndarray, np.ndarray, Any]:
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


def shm_tensors(module: Any) -> tuple[list[Any], list[Any]]:
    inputs = [module.InferInput("INPUT0", SHAPE, "FP32"), module.InferInput("INPUT1", SHAPE, "FP32")]
    inputs[0].set_shared_memory("input0_data", NBYTES)
    inputs[1].set_shared_memory("input1_data", NBYTES)
    outputs = [module.InferRequestedOutput("OUTPUT0"), module.InferRequestedOutput("OUTPUT1")]
    outputs[0].set_shared_memory("output_data", NBYTES)
    outputs[1].set_shared_memory("output_data", NBYTES, offset=NBYTES)
    return inputs, outputs


def check_add_sub(result: Any, in0: np.ndarray, in1: np.ndarray, handle_out: Any) -> None:
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


def shm_free_inputs() -> list[Any]:
    made = [grpcclient.InferInput("INPUT0", SHAPE, "FP32"), grpcclient.InferInput("INPUT1", SHAPE, "FP32")]
    for tensor in made:
        tensor.set_data_from_numpy(np.ones(SHAPE, np.float32))
    return made
