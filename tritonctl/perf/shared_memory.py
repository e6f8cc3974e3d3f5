"""`tritonctl perf --shared-memory system`: tensors through client shared memory, as perf_analyzer does.

Before the load starts, each distinct request's inputs are written once into POSIX shared-memory
regions (one per input per request), one region per output receives the answers (concurrent
requests overwrite each other's outputs there, as with perf_analyzer), and every region is
registered with the server. The prebuilt requests then name regions instead of carrying bytes.
At the end every region is unregistered and unlinked, even when the run fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
from multiprocessing import shared_memory
from typing import Any

import numpy as np
import orjson

from tritonctl.perf.encode import http_infer_path, tensor_bytes
from tritonctl.perf.errors import PerfError
from tritonctl.perf.inputs import Array, InputSpec

DEFAULT_OUTPUT_SIZE = 100 * 1024  # perf_analyzer's --output-shared-memory-size default


class PerfRegions:
    """The regions of one run and their registration (HTTP or gRPC, the run's protocol)."""

    def __init__(self, protocol: str, url: str, output_size: int = DEFAULT_OUTPUT_SIZE) -> None:
        self.protocol = protocol
        self.url = url
        self.output_size = output_size
        self.prefix = f"tritonctl_perf_{os.getpid()}"
        self._blocks: list[shared_memory.SharedMemory] = []
        self._registered: list[str] = []

    def _region(self, label: str, size: int) -> str:
        name = f"{self.prefix}_{label}"
        block = shared_memory.SharedMemory(name=name, create=True, size=max(size, 1))
        self._blocks.append(block)
        self._register(name, "/" + name, max(size, 1))
        return name

    def inputs(
        self, specs: list[InputSpec], step: dict[str, Array], index: int
    ) -> dict[str, tuple[str, int]]:
        """Write one request's inputs into fresh regions: name -> (region, byte size)."""
        placed: dict[str, tuple[str, int]] = {}
        for number, spec in enumerate(specs):
            data = tensor_bytes(spec.datatype, step[spec.name])
            region = self._region(f"in{index}_{number}", len(data))
            block = self._blocks[-1]
            assert block.buf is not None
            block.buf[: len(data)] = data
            placed[spec.name] = (region, len(data))
        return placed

    def outputs(self, names: list[str]) -> dict[str, str]:
        return {name: self._region(f"out{number}", self.output_size) for number, name in enumerate(names)}

    # -- registration --------------------------------------------------------------------------------
    def _register(self, name: str, key: str, size: int) -> None:
        if self.protocol == "grpc":
            self._grpc("SystemSharedMemoryRegister", name=name, key=key, offset=0, byte_size=size)
        else:
            body = orjson.dumps({"key": key, "offset": 0, "byte_size": size})
            self._http(f"/v2/systemsharedmemory/region/{name}/register", body)
        self._registered.append(name)

    def _http(self, path: str, body: bytes) -> None:
        request = urllib.request.Request(f"http://{self.url}{path}", data=body, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30):
                pass
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            with contextlib.suppress(ValueError):
                text = json.loads(text).get("error", text)
            raise PerfError(f"shared-memory registration refused by the server: {text}") from None

    def _grpc(self, method: str, **fields: Any) -> None:
        import grpc
        from tritonclient.grpc import service_pb2

        request = getattr(service_pb2, f"{method}Request")(**fields)
        with grpc.insecure_channel(self.url) as channel:
            call: Any = channel.unary_unary(
                f"/inference.GRPCInferenceService/{method}",
                request_serializer=lambda message: message.SerializeToString(),
                response_deserializer=lambda data: data,
            )
            try:
                call(request, timeout=30)
            except grpc.RpcError as exc:
                raise PerfError(
                    f"shared-memory registration refused by the server: {exc.details()}"
                ) from None

    def close(self) -> None:
        for name in self._registered:
            with contextlib.suppress(PerfError, OSError):
                if self.protocol == "grpc":
                    self._grpc("SystemSharedMemoryUnregister", name=name)
                else:
                    self._http(f"/v2/systemsharedmemory/region/{name}/unregister", b"")
        self._registered.clear()
        for block in self._blocks:
            with contextlib.suppress(OSError, BufferError):
                block.close()
            with contextlib.suppress(OSError):
                block.unlink()
        self._blocks.clear()


def _parameters(region: str, size: int) -> dict[str, Any]:
    return {"shared_memory_region": region, "shared_memory_byte_size": size}


def grpc_shm_payload(
    model: str,
    version: str,
    *,
    specs: list[InputSpec],
    step: dict[str, Array],
    placed: dict[str, tuple[str, int]],
    outputs: dict[str, str],
    output_size: int,
) -> bytes:
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    for spec in specs:
        tensor = request.inputs.add(name=spec.name, datatype=spec.datatype)
        tensor.shape.extend(int(d) for d in np.shape(step[spec.name]))
        region, size = placed[spec.name]
        tensor.parameters["shared_memory_region"].string_param = region
        tensor.parameters["shared_memory_byte_size"].int64_param = size
    for name, region in outputs.items():
        output = request.outputs.add(name=name)
        output.parameters["shared_memory_region"].string_param = region
        output.parameters["shared_memory_byte_size"].int64_param = output_size
    payload: bytes = request.SerializeToString()
    return payload


def http_shm_payload(
    host: str,
    model: str,
    version: str,
    *,
    specs: list[InputSpec],
    step: dict[str, Array],
    placed: dict[str, tuple[str, int]],
    outputs: dict[str, str],
    output_size: int,
) -> bytes:
    body = orjson.dumps(
        {
            "inputs": [
                {
                    "name": spec.name,
                    "datatype": spec.datatype,
                    "shape": list(np.shape(step[spec.name])),
                    "parameters": _parameters(*placed[spec.name]),
                }
                for spec in specs
            ],
            "outputs": [
                {"name": name, "parameters": _parameters(region, output_size)}
                for name, region in outputs.items()
            ],
        }
    )
    head = (
        f"POST {http_infer_path(model, version)} HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body
