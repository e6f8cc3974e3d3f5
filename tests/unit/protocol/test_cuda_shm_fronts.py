"""CUDA shared memory through both front ends: the HTTP routes (HttpApp.handle) and the gRPC servicer
(InferenceRpcs), over a real DataPlane and in-process models, with a fake GPU of host memory
(tests/support/fake_cuda.py) behind the server's one CudaRegionTable.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pytest
from tritonclient.grpc import service_pb2 as pb

from server.errors import InvalidInput, RegionExists
from server.protocol.grpc.service import InferenceRpcs
from server.protocol.http.routes import HttpApp, HttpRequest, InferCall
from server.vocabulary.cuda_regions import CudaRegionTable
from server.vocabulary.shm_regions import RegionTable
from tests.support.fake_cuda import FakeGpu
from tests.unit.protocol.http_harness import MAX_INPUT_SIZE, Http, error_of, json_of

ADD_SUB = "/v2/models/add_sub/infer"
A = np.arange(4, dtype=np.float32).reshape(1, 4)
B = np.full((1, 4), 10, np.float32)
NBYTES = A.nbytes  # 16


@dataclass
class Served:
    http: Http  # an HttpApp over the shared tables
    rpcs: InferenceRpcs  # the gRPC servicer over the same tables
    gpu: FakeGpu
    regions: RegionTable
    cuda: CudaRegionTable
    inputs: bytes  # the handles of two client allocations
    outputs: bytes

    def grpc(self, rpc: str, request: Any) -> Any:
        return self.http.loop.run_until_complete(getattr(self.rpcs, rpc)(request))


@pytest.fixture
def served(http: Http) -> Iterator[Served]:
    """What server/app.py builds: one table of each kind, linked, shared by HTTP and gRPC."""
    gpu = FakeGpu()
    regions = RegionTable(allowed=True)
    cuda = CudaRegionTable(allowed=True, runtime_factory=lambda: gpu, system=regions)
    app = HttpApp(http.dataplane, MAX_INPUT_SIZE, regions=regions)
    inputs, outputs = gpu.allocate(2 * NBYTES), gpu.allocate(2 * NBYTES)
    gpu.memory(inputs)[:] = A.tobytes() + B.tobytes()
    yield Served(
        Http(http.loop, http.dataplane, app, http.repo),
        InferenceRpcs(http.dataplane, regions),
        gpu,
        regions,
        cuda,
        inputs,
        outputs,
    )
    cuda.close()
    regions.close()


def in_region(name: str, offset: int, size: int = NBYTES) -> dict[str, Any]:
    return {"shared_memory_region": name, "shared_memory_offset": offset, "shared_memory_byte_size": size}


def http_register(served: Served, name: str, handle: bytes, size: int = 2 * NBYTES) -> None:
    body = {"raw_handle": {"b64": base64.b64encode(handle).decode()}, "device_id": 0, "byte_size": size}
    response = served.http.post(f"/v2/cudasharedmemory/region/{name}/register", body)
    assert response.status == 200, response.body


def add_sub_body(output_size: int = NBYTES) -> dict[str, Any]:
    tensor = {"shape": [1, 4], "datatype": "FP32"}
    return {
        "inputs": [
            {"name": "INPUT0", **tensor, "parameters": in_region("in", 0)},
            {"name": "INPUT1", **tensor, "parameters": in_region("in", NBYTES)},
        ],
        "outputs": [
            {"name": "OUTPUT0", "parameters": in_region("out", 0, output_size)},
            {"name": "OUTPUT1", "parameters": in_region("out", NBYTES, output_size)},
        ],
    }


def device_outputs(served: Served) -> tuple[np.ndarray, np.ndarray]:
    memory = np.frombuffer(bytes(served.gpu.memory(served.outputs)), np.float32).reshape(2, 1, 4)
    return memory[0], memory[1]


def test_http_register_status_infer_unregister(served: Served) -> None:
    http_register(served, "in", served.inputs)
    http_register(served, "out", served.outputs)
    status = served.http.get("/v2/cudasharedmemory/region/out/status")
    assert (status.status, json_of(status)) == (200, [{"name": "out", "device_id": 0, "byte_size": 32}])
    response = served.http.post(ADD_SUB, add_sub_body())
    assert response.status == 200, response.body
    answer = json_of(response)
    assert [output["name"] for output in answer["outputs"]] == ["OUTPUT0", "OUTPUT1"]
    assert all("data" not in output for output in answer["outputs"])  # the bytes went to the device
    total, difference = device_outputs(served)
    np.testing.assert_array_equal(total, A + B)
    np.testing.assert_array_equal(difference, A - B)
    assert not served.gpu.closed  # the requests let go of their references, the table keeps its own
    assert served.http.post("/v2/cudasharedmemory/unregister").status == 200
    assert json_of(served.http.get("/v2/cudasharedmemory/status")) == []
    assert len(served.gpu.closed) == 2 and not served.gpu.opened


def test_http_errors_keep_their_own_status(served: Served) -> None:
    http_register(served, "in", served.inputs)
    again = served.http.post(
        "/v2/cudasharedmemory/region/in/register",
        {"raw_handle": {"b64": base64.b64encode(served.outputs).decode()}, "device_id": 0, "byte_size": 8},
    )
    assert again.status == 400 and error_of(again) == "shared memory region 'in' already in manager"
    bad_device = served.http.post(
        "/v2/cudasharedmemory/region/x/register",
        {"raw_handle": {"b64": base64.b64encode(served.outputs).decode()}, "device_id": 3, "byte_size": 8},
    )
    assert bad_device.status == 400 and "Invalid device id 3" in error_of(bad_device)
    unknown = served.http.get("/v2/cudasharedmemory/region/x/status")
    assert unknown.status == 404
    # The system table refuses the CUDA region's name: one name space.
    with pytest.raises(RegionExists):
        served.regions.register("in", "/whatever", 0, 16)


def test_http_output_too_small_is_tritons_error(served: Served) -> None:
    http_register(served, "in", served.inputs)
    http_register(served, "out", served.outputs)
    response = served.http.post(ADD_SUB, add_sub_body(output_size=8))
    assert response.status == 400
    assert error_of(response) == (
        "shared memory size specified with the request for output 'OUTPUT0' (8 bytes) "
        "should be at least 16 bytes to hold the results"
    )
    out_of_bounds = add_sub_body()
    out_of_bounds["inputs"][1]["parameters"] = in_region("in", NBYTES + 1)
    refused = served.http.post(ADD_SUB, out_of_bounds)
    assert refused.status == 400 and "Invalid offset + byte size" in error_of(refused)


def test_http_unregister_during_a_request_keeps_the_region_until_it_ends(served: Served) -> None:
    """Triton #7743 with CUDA regions: the output lands, and only then the handle closes, once."""
    http_register(served, "in", served.inputs)
    http_register(served, "out", served.outputs)
    call = served.http.start_infer(HttpRequest("POST", ADD_SUB, {}, orjson.dumps(add_sub_body())))
    assert isinstance(call, InferCall), call
    assert served.http.post("/v2/cudasharedmemory/unregister").status == 200
    assert len(served.gpu.closed) == 1  # "in": its inputs were copied when the request was decoded
    response = served.http.finish_infer(call)
    assert response.status == 200, response.body
    total, difference = device_outputs(served)
    np.testing.assert_array_equal(total, A + B)
    np.testing.assert_array_equal(difference, A - B)
    assert len(served.gpu.closed) == 2 and not served.gpu.opened


def test_grpc_register_status_infer_unregister(served: Served) -> None:
    for name, handle in (("in", served.inputs), ("out", served.outputs)):
        served.grpc(
            "CudaSharedMemoryRegister",
            pb.CudaSharedMemoryRegisterRequest(name=name, raw_handle=handle, device_id=0, byte_size=32),
        )
    status = served.grpc("CudaSharedMemoryStatus", pb.CudaSharedMemoryStatusRequest(name="in"))
    region = status.regions["in"]
    assert (region.name, region.device_id, region.byte_size) == ("in", 0, 32)
    # Both front ends see one table: HTTP lists what gRPC registered.
    assert [r["name"] for r in json_of(served.http.get("/v2/cudasharedmemory/status"))] == ["in", "out"]
    request = pb.ModelInferRequest(model_name="add_sub")
    for index, name in enumerate(("INPUT0", "INPUT1")):
        tensor = request.inputs.add(name=name, datatype="FP32", shape=[1, 4])
        tensor.parameters["shared_memory_region"].string_param = "in"
        tensor.parameters["shared_memory_offset"].int64_param = index * NBYTES
        tensor.parameters["shared_memory_byte_size"].int64_param = NBYTES
    for index, name in enumerate(("OUTPUT0", "OUTPUT1")):
        output = request.outputs.add(name=name)
        output.parameters["shared_memory_region"].string_param = "out"
        output.parameters["shared_memory_offset"].int64_param = index * NBYTES
        output.parameters["shared_memory_byte_size"].int64_param = NBYTES
    chunks = served.grpc("ModelInfer", request)
    answer = pb.ModelInferResponse.FromString(b"".join(bytes(chunk) for chunk in chunks))
    assert [output.name for output in answer.outputs] == ["OUTPUT0", "OUTPUT1"]
    assert all(not raw for raw in answer.raw_output_contents)
    total, difference = device_outputs(served)
    np.testing.assert_array_equal(total, A + B)
    np.testing.assert_array_equal(difference, A - B)
    served.grpc("CudaSharedMemoryUnregister", pb.CudaSharedMemoryUnregisterRequest(name="in"))
    served.grpc("CudaSharedMemoryUnregister", pb.CudaSharedMemoryUnregisterRequest())
    assert not served.grpc("CudaSharedMemoryStatus", pb.CudaSharedMemoryStatusRequest()).regions
    assert len(served.gpu.closed) == 2


def test_grpc_a_cuda_error_is_invalid_argument(served: Served) -> None:
    with pytest.raises(InvalidInput, match="failed to open CUDA IPC handle of region 'x'") as failed:
        served.grpc(
            "CudaSharedMemoryRegister",
            pb.CudaSharedMemoryRegisterRequest(name="x", raw_handle=bytes(64), device_id=0, byte_size=8),
        )
    assert failed.value.grpc_code.name == "INVALID_ARGUMENT"
    assert not served.grpc("CudaSharedMemoryStatus", pb.CudaSharedMemoryStatusRequest()).regions
