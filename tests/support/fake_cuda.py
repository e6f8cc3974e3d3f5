"""A CudaIpc (server/vocabulary/cuda_regions.py) whose "device memory" is host bytearrays.

    gpu = FakeGpu(devices=1)
    handle = gpu.allocate(64)                  # what cudaMalloc + cudaIpcGetMemHandle give a client
    table = CudaRegionTable(allowed=True, runtime_factory=lambda: gpu)

Each handle is 64 random bytes naming one allocation. The server opens it at a pointer of its own;
every copy must fall inside one opened allocation, or the fake fails the test (AssertionError): a
bounds check the server forgot shows up here instead of as a corrupted GPU.
"""

from __future__ import annotations

import os

from server.errors import InvalidInput


class FakeGpu:
    def __init__(self, devices: int = 1) -> None:
        self.devices = devices
        self.allocations: dict[bytes, tuple[int, bytearray]] = {}  # handle -> (device, memory)
        self.opened: dict[int, tuple[int, bytearray]] = {}  # pointer -> (device, memory)
        self.closed: list[int] = []
        self._next_pointer = 0x7F00_0000_0000

    def allocate(self, size: int, device: int = 0) -> bytes:
        handle = os.urandom(64)
        self.allocations[handle] = (device, bytearray(size))
        return handle

    def memory(self, handle: bytes) -> bytearray:
        return self.allocations[handle][1]

    # -- CudaIpc ---------------------------------------------------------------------------------
    def device_count(self) -> int:
        return self.devices

    def open(self, handle: bytes, device: int) -> int:
        if handle not in self.allocations:
            raise InvalidInput("cudaIpcOpenMemHandle failed: invalid argument")
        owner, memory = self.allocations[handle]
        if owner != device:
            raise InvalidInput("cudaIpcOpenMemHandle failed: invalid device context")
        pointer = self._next_pointer
        self._next_pointer += 1 << 32
        self.opened[pointer] = (device, memory)
        return pointer

    def close(self, pointer: int, device: int) -> None:
        assert pointer in self.opened, f"closing {pointer:#x}, which is not open (closed twice?)"
        assert self.opened[pointer][0] == device
        del self.opened[pointer]
        self.closed.append(pointer)

    def to_host(self, pointer: int, device: int, view: memoryview) -> None:
        memory, start = self._locate(pointer, device, view.nbytes)
        view[:] = memory[start : start + view.nbytes]

    def from_host(self, pointer: int, device: int, data: memoryview) -> None:
        memory, start = self._locate(pointer, device, data.nbytes)
        memory[start : start + data.nbytes] = data

    def _locate(self, pointer: int, device: int, size: int) -> tuple[bytearray, int]:
        for base, (owner, memory) in self.opened.items():
            if base <= pointer < base + (1 << 32):
                assert owner == device, f"copy on device {device}, region on {owner}"
                start = pointer - base
                assert size >= 0 and start + size <= len(memory), (
                    f"device access out of bounds: {size} bytes at {start} of {len(memory)}"
                )
                return memory, start
        raise AssertionError(f"device access at {pointer:#x}: no open region there (used after close?)")
