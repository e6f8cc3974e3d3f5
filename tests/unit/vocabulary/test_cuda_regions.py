"""The CUDA region table (server/vocabulary/cuda_regions.py) over a fake GPU of host memory.

Everything but the CUDA copies themselves: requests, names, device ids, bounds, lifetimes, the
unavailable path, and the cuda-python adapter against a fake `cudart` whose pointers are real host
addresses (benchmarks/gpu_check.py runs the real thing where a GPU is lent).
"""

from __future__ import annotations

import base64
import ctypes
import gc
import sys
import types
import uuid
from collections.abc import Iterator
from multiprocessing import shared_memory
from typing import Any

import pytest

from server.errors import Forbidden, GpuRequired, InvalidInput, RegionExists, RegionNotFound
from server.vocabulary import cuda_regions
from server.vocabulary.cuda_regions import (
    NOT_INSTALLED,
    CudaPythonIpc,
    CudaRegionTable,
    probe_cuda,
)
from server.vocabulary.shm_regions import RegionTable
from tests.support.fake_cuda import FakeGpu


@pytest.fixture
def gpu() -> FakeGpu:
    return FakeGpu(devices=2)


def table_on(gpu: FakeGpu, system: RegionTable | None = None) -> CudaRegionTable:
    return CudaRegionTable(allowed=True, runtime_factory=lambda: gpu, system=system)


def b64(handle: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(handle).decode()}


def test_register_status_unregister(gpu: FakeGpu) -> None:
    table = table_on(gpu)
    first, second = gpu.allocate(64), gpu.allocate(32, device=1)
    table.register("a", b64(first), 0, 64)  # HTTP's form of the handle
    table.register("b", second, 1, 32)  # gRPC's
    assert table.status() == [
        {"name": "a", "device_id": 0, "byte_size": 64},
        {"name": "b", "device_id": 1, "byte_size": 32},
    ]
    assert table.status("b") == [{"name": "b", "device_id": 1, "byte_size": 32}]
    with pytest.raises(RegionNotFound, match="Unable to find cuda shared memory region: 'c'"):
        table.status("c")
    assert len(gpu.opened) == 2
    table.unregister("a")
    assert table.status() == [{"name": "b", "device_id": 1, "byte_size": 32}]
    assert len(gpu.closed) == 1 and len(gpu.opened) == 1
    table.unregister("a")  # unknown now: no error, nothing closed twice
    table.unregister()
    assert table.status() == [] and not gpu.opened and len(gpu.closed) == 2


def test_a_region_may_be_smaller_than_its_allocation_but_not_empty(gpu: FakeGpu) -> None:
    table = table_on(gpu)
    handle = gpu.allocate(64)
    with pytest.raises(InvalidInput, match="byte_size must be positive"):
        table.register("a", handle, 0, 0)
    table.register("a", handle, 0, 16)
    with pytest.raises(InvalidInput, match="Invalid offset"):
        table.read_input("a", 0, 17)


def test_one_name_space_across_system_and_cuda_tables(gpu: FakeGpu) -> None:
    system = RegionTable(allowed=True)
    table = table_on(gpu, system)
    assert system.cuda is table
    block = shared_memory.SharedMemory(name=f"tritonctl_cuda_{uuid.uuid4().hex[:10]}", create=True, size=64)
    try:
        system.register("sys", "/" + block.name, 0, 64)
        with pytest.raises(RegionExists, match="'sys' already in manager"):
            table.register("sys", gpu.allocate(16), 0, 16)
        table.register("dev", gpu.allocate(16), 0, 16)
        with pytest.raises(RegionExists, match="'dev' already in manager"):
            system.register("dev", "/" + block.name, 0, 64)
        with pytest.raises(RegionExists, match="'dev' already in manager"):
            table.register("dev", gpu.allocate(16), 0, 16)
        assert len(gpu.opened) == 1  # the refused ones were never opened
    finally:
        system.close()
        block.close()
        block.unlink()


def test_a_device_id_past_the_last_device_is_refused(gpu: FakeGpu) -> None:
    table = table_on(gpu)
    with pytest.raises(InvalidInput, match="Invalid device id 2: this server sees 2 CUDA device"):
        table.register("a", gpu.allocate(16), 2, 16)
    with pytest.raises(InvalidInput, match="device_id"):
        table.register("a", gpu.allocate(16), -1, 16)
    assert table.status() == [] and not gpu.opened


def test_a_cuda_error_opening_the_handle_registers_nothing(gpu: FakeGpu) -> None:
    table = table_on(gpu)
    with pytest.raises(InvalidInput, match=r"open CUDA IPC handle of region 'a': .*invalid argument"):
        table.register("a", bytes(64), 0, 16)  # a handle no allocation has
    with pytest.raises(InvalidInput, match="invalid device context"):
        table.register("a", gpu.allocate(16, device=1), 0, 16)  # the handle's memory is on device 1
    assert table.status() == [] and "a" not in table


@pytest.mark.parametrize(
    "raw_handle", [{"b64": "AAAA"}, {"b64": "not base64!"}, {"b64": 5}, {}, "x" * 64, bytes(63), bytes(65)]
)
def test_malformed_handles_are_refused_before_cuda(gpu: FakeGpu, raw_handle: object) -> None:
    with pytest.raises(InvalidInput, match="cudaIpcMemHandle_t"):
        table_on(gpu).register("a", raw_handle, 0, 16)


@pytest.mark.parametrize(
    ("offset", "size"),
    [(0, 65), (60, 5), (64, 1), (65, 0), (-1, 4), (0, -1), (2**63 - 1, 2), (2, 2**63 - 1), (2**62, 2**62)],
)
def test_every_access_is_bounds_checked(gpu: FakeGpu, offset: int, size: int) -> None:
    table = table_on(gpu)
    table.register("a", gpu.allocate(64), 0, 64)
    with pytest.raises(InvalidInput, match="Invalid offset \\+ byte size for shared memory region: 'a'"):
        table.read_input("a", offset, size)
    with pytest.raises(InvalidInput, match="Invalid offset"):
        table.output_target("a", offset, size)
    table.unregister()
    assert len(gpu.closed) == 1  # a refused target holds nothing


def test_an_input_is_copied_to_host(gpu: FakeGpu) -> None:
    table = table_on(gpu)
    handle = gpu.allocate(64)
    gpu.memory(handle)[:] = bytes(range(64))
    table.register("a", handle, 0, 64)
    assert table.read_input("a", 10, 6) == bytes(range(10, 16))
    assert table.read_input("a", 60, 4) == bytes(range(60, 64))  # the last byte is in bounds
    assert table.read_input("a", 64, 0) == b""
    with pytest.raises(RegionNotFound, match="Unable to find shared memory region: 'b'"):
        table.read_input("b", 0, 1)


def test_an_output_is_written_to_the_device(gpu: FakeGpu) -> None:
    table = table_on(gpu)
    handle = gpu.allocate(32)
    table.register("a", handle, 0, 32)
    target = table.output_target("a", 8, 16)
    assert (target.direct, target.fd, target.written) == (False, -1, False)  # never a worker's
    target.write("OUT", memoryview(b"0123456789"))
    assert bytes(gpu.memory(handle)) == bytes(8) + b"0123456789" + bytes(14)
    with pytest.raises(InvalidInput, match="\\(16 bytes\\) should be at least 17 bytes to hold the results"):
        target.write("OUT", b"x" * 17)
    target.release()
    with pytest.raises(InvalidInput, match="released"):
        target.write("OUT", b"late")


def test_unregister_while_a_request_holds_the_region(gpu: FakeGpu) -> None:
    """Triton #7743: the handle stays open until the request lets go, then closes exactly once."""
    table = table_on(gpu)
    handle = gpu.allocate(16)
    table.register("a", handle, 0, 16)
    first, second = table.output_target("a", 0, 8), table.output_target("a", 8, 8)
    table.unregister("a")
    assert table.status() == [] and not gpu.closed
    with pytest.raises(RegionNotFound):
        table.output_target("a", 0, 8)  # new requests no longer find it
    first.write("OUT0", b"abcdefgh")
    first.release()
    assert not gpu.closed
    second.write("OUT1", b"ijklmnop")
    second.release()
    second.release()
    assert bytes(gpu.memory(handle)) == b"abcdefghijklmnop"
    assert len(gpu.closed) == 1 and not gpu.opened
    table.unregister()
    assert len(gpu.closed) == 1


def test_a_target_dropped_without_release_lets_the_region_go(gpu: FakeGpu) -> None:
    table = table_on(gpu)
    table.register("a", gpu.allocate(16), 0, 16)
    target = table.output_target("a", 0, 8)
    table.unregister()
    del target
    gc.collect()
    assert len(gpu.closed) == 1


def test_close_at_exit_closes_every_handle(gpu: FakeGpu) -> None:
    table = table_on(gpu)
    for name in ("a", "b", "c"):
        table.register(name, gpu.allocate(16), 0, 16)
    table.close()
    assert len(table) == 0 and len(gpu.closed) == 3 and not gpu.opened


def test_counts_names_and_the_disabled_table(gpu: FakeGpu) -> None:
    table = CudaRegionTable(allowed=True, runtime_factory=lambda: gpu, max_regions=2)
    table.register("a", gpu.allocate(16), 0, 16)
    table.register("b", gpu.allocate(16), 0, 16)
    with pytest.raises(InvalidInput, match="too many"):
        table.register("c", gpu.allocate(16), 0, 16)
    for name in ("", "x" * 257, "bad\nname", 5):
        with pytest.raises(InvalidInput, match="region name"):
            table.register(name, gpu.allocate(16), 0, 16)
    disabled = CudaRegionTable(allowed=False, runtime_factory=lambda: gpu)
    with pytest.raises(Forbidden, match="--allow-client-shm"):
        disabled.register("a", {"b64": "AAAA"}, 0, 16)  # refused before the request is read
    with pytest.raises(Forbidden):
        disabled.read_input("a", 0, 1)


def test_without_a_runtime_it_needs_a_gpu_and_says_why() -> None:
    probes: list[int] = []

    def unavailable() -> str:
        probes.append(1)
        return NOT_INSTALLED

    table = CudaRegionTable(allowed=True, runtime_factory=unavailable)
    assert table.status() == []
    table.unregister()
    assert probes == []  # nothing probed until someone registers
    with pytest.raises(InvalidInput, match="cudaIpcMemHandle_t") as malformed:
        table.register("a", {"b64": "AAAA"}, 0, 16)
    assert not isinstance(malformed.value, GpuRequired)  # its own 400 first
    for _ in range(2):
        with pytest.raises(GpuRequired, match=r"needs a GPU.*pip install 'tritonctl\[cuda\]'"):
            table.register("a", bytes(64), 0, 16)
    assert probes == [1]  # probed once, the answer kept
    assert table.status() == []


def test_the_probe_without_cuda_python(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    assert probe_cuda() == NOT_INSTALLED


# -- the cuda-python adapter against a fake cudart ----------------------------------------------


class FakeCudart:
    """The slice of cuda.bindings.runtime CudaPythonIpc calls; device pointers are host addresses."""

    class cudaError_t:  # cuda-python's names
        cudaSuccess = 0
        cudaErrorNoDevice = 100
        cudaErrorInvalidValue = 1

    class cudaMemcpyKind:
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    cudaIpcMemLazyEnablePeerAccess = 1

    class cudaIpcMemHandle_t:  # cuda-bindings 13: no `reserved`, only getPtr()
        def __init__(self) -> None:
            self.struct = (ctypes.c_char * 64)()

        def getPtr(self) -> int:
            return ctypes.addressof(self.struct)

    def __init__(self, devices: int = 1, count_error: int = 0) -> None:
        self.devices, self.count_error = devices, count_error
        self.allocation = (ctypes.c_char * 64)()
        self.handle = b"H" * 64
        self.calls: list[tuple[Any, ...]] = []

    def cudaGetErrorString(self, error: int) -> tuple[int, bytes]:
        return 0, {100: b"no CUDA-capable device is detected", 1: b"invalid argument"}[error]

    def cudaGetDeviceCount(self) -> tuple[int, int]:
        return self.count_error, self.devices

    def cudaSetDevice(self, device: int) -> tuple[int]:
        self.calls.append(("cudaSetDevice", device))
        return (0,) if device < self.devices else (1,)

    def cudaIpcOpenMemHandle(self, handle: Any, flags: int) -> tuple[int, int]:
        given = ctypes.string_at(handle.getPtr(), 64)
        self.calls.append(("cudaIpcOpenMemHandle", given, flags))
        if given != self.handle:
            return 1, 0
        return 0, ctypes.addressof(self.allocation)

    def cudaIpcCloseMemHandle(self, pointer: int) -> tuple[int]:
        self.calls.append(("cudaIpcCloseMemHandle", pointer))
        return (0,)

    def cudaMemcpy(self, destination: int, source: int, size: int, kind: int) -> tuple[int]:
        self.calls.append(("cudaMemcpy", kind, size))
        ctypes.memmove(destination, source, size)
        return (0,)

    def cudaDeviceSynchronize(self) -> tuple[int]:
        self.calls.append(("cudaDeviceSynchronize",))
        return (0,)


@pytest.fixture
def fake_cuda_python(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCudart]:
    cudart = FakeCudart(devices=1)
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = cudart  # type: ignore[attr-defined]
    package = types.ModuleType("cuda")
    package.bindings = bindings  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cuda", package)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cudart)  # type: ignore[arg-type]
    yield cudart


def test_the_probe_reports_cuda_errors_and_missing_devices(fake_cuda_python: FakeCudart) -> None:
    assert isinstance(probe_cuda(), CudaPythonIpc)
    fake_cuda_python.devices = 0
    assert probe_cuda() == cuda_regions.NO_DEVICE
    fake_cuda_python.count_error = FakeCudart.cudaError_t.cudaErrorNoDevice
    assert probe_cuda() == "cudaGetDeviceCount failed: no CUDA-capable device is detected"


def test_the_cuda_python_adapter_end_to_end(fake_cuda_python: FakeCudart) -> None:
    """The default factory, the handle bytes through getPtr(), the copies and the close."""
    cudart = fake_cuda_python
    table = CudaRegionTable(allowed=True)  # probes cuda-python itself
    with pytest.raises(InvalidInput, match=r"open CUDA IPC handle of region 'a': .*invalid argument"):
        table.register("a", bytes(64), 0, 64)
    table.register("a", b64(cudart.handle), 0, 64)
    assert ("cudaIpcOpenMemHandle", cudart.handle, 1) in cudart.calls
    cudart.allocation[0:8] = b"abcdefgh"
    assert table.read_input("a", 2, 4) == b"cdef"
    target = table.output_target("a", 60, 4)
    target.write("OUT", b"wxyz")  # bytes: a read-only buffer
    assert cudart.allocation.raw[60:64] == b"wxyz"
    assert cudart.calls[-1] == ("cudaDeviceSynchronize",)  # the client reads right after
    target.release()
    table.close()
    assert cudart.calls[-1] == ("cudaIpcCloseMemHandle", ctypes.addressof(cudart.allocation))
