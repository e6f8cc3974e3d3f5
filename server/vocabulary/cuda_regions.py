"""Client CUDA shared memory: the table of registered CUDA IPC regions (Triton's cudasharedmemory).

A client allocates device memory, exports it with `cudaIpcGetMemHandle` and registers the 64 raw
bytes of that handle (HTTP: base64 in `raw_handle.b64`, gRPC: the bytes) with a device id and a
size under a name. Tensors then name the region with the same `shared_memory_region` parameter as
system shared memory: one name space across both tables, as in Triton's single manager.

How the bytes move, and why:
- the server opens the handle in the main process (`cudaIpcOpenMemHandle`), and copies a region
  input to host memory when the request is decoded, so workers, batching and the response cache
  see ordinary bytes; an output is copied to the device when the answer is encoded (never by a
  worker: `direct` is always False);
- every access is bounds-checked against the registered byte_size (offsets come from the network);
- the CUDA calls sit behind `CudaIpc`, so everything but the copies themselves is tested without a
  GPU (tests/unit/vocabulary/test_cuda_regions.py); the real one uses cuda-python, imported on the
  first register only (`tritonctl --help` and a server nobody asks for CUDA shm never load it);
- a region is reference-counted: the table holds one reference and each in-flight input copy or
  output target holds another, so a region unregistered while a request uses it stays open until
  that request ends (Triton #7743 was a use after free there), and its handle closes exactly once.

Without a GPU or cuda-python, status lists none and registering answers GpuRequired with the reason
(after the request itself was checked). Registration is off unless --allow-client-shm=true.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from server.errors import Forbidden, GpuRequired, InvalidInput
from server.vocabulary.shm_regions import (
    DISABLED_MESSAGE,
    MAX_REGIONS,
    Regions,
    RegionTable,
    check_name,
    count_field,
    fitting_output,
)

logger = logging.getLogger(__name__)

CUDA_IPC_HANDLE_SIZE = 64  # sizeof(cudaIpcMemHandle_t)
NOT_INSTALLED = "cuda-python is not installed (pip install 'tritonctl[cuda]')"
NO_DEVICE = "no CUDA device"


class CudaIpc(Protocol):
    """The few CUDA runtime calls the table needs (the seam its tests fill with host memory)."""

    def device_count(self) -> int: ...

    def open(self, handle: bytes, device: int) -> int:
        """cudaIpcOpenMemHandle on `device`: the device pointer of the client's allocation."""

    def close(self, pointer: int, device: int) -> None: ...

    def to_host(self, pointer: int, device: int, view: memoryview) -> None:
        """Copy view.nbytes bytes at `pointer` into `view`."""

    def from_host(self, pointer: int, device: int, data: memoryview) -> None:
        """Copy `data` to `pointer`, complete when this returns."""


RuntimeFactory = Callable[[], "CudaIpc | str"]  # a runtime, or why there is none


class CudaPythonIpc:
    """CudaIpc over cuda-python's runtime bindings, what tritonclient.utils.cuda_shared_memory uses.
    Any CUDA error raises InvalidInput with CUDA's own message."""

    def __init__(self, cudart: Any) -> None:
        self._cudart = cudart

    def _check(self, call: str, result: Any) -> Any:
        error, *values = result  # cuda-python answers (cudaError_t, *outputs)
        if error != self._cudart.cudaError_t.cudaSuccess:
            _, text = self._cudart.cudaGetErrorString(error)
            message = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
            raise InvalidInput(f"{call} failed: {message}")
        return values[0] if values else None

    def device_count(self) -> int:
        return int(self._check("cudaGetDeviceCount", self._cudart.cudaGetDeviceCount()))

    def open(self, handle: bytes, device: int) -> int:
        import ctypes

        cudart = self._cudart
        self._check("cudaSetDevice", cudart.cudaSetDevice(device))
        ipc_handle = cudart.cudaIpcMemHandle_t()
        # cuda-bindings 13 dropped the struct's `reserved` field: write through its address.
        ctypes.memmove(ipc_handle.getPtr(), handle, len(handle))
        opened = cudart.cudaIpcOpenMemHandle(ipc_handle, cudart.cudaIpcMemLazyEnablePeerAccess)
        return int(self._check("cudaIpcOpenMemHandle", opened))

    def close(self, pointer: int, device: int) -> None:
        self._check("cudaSetDevice", self._cudart.cudaSetDevice(device))
        self._check("cudaIpcCloseMemHandle", self._cudart.cudaIpcCloseMemHandle(pointer))

    def to_host(self, pointer: int, device: int, view: memoryview) -> None:
        self._copy(view, pointer, device, view.nbytes, "cudaMemcpyDeviceToHost")

    def from_host(self, pointer: int, device: int, data: memoryview) -> None:
        self._copy(data, pointer, device, data.nbytes, "cudaMemcpyHostToDevice")
        # The client reads the region from its own process right after the answer: wait for the DMA.
        self._check("cudaDeviceSynchronize", self._cudart.cudaDeviceSynchronize())

    def _copy(self, host: memoryview, pointer: int, device: int, size: int, kind: str) -> None:
        if size == 0:
            return
        import numpy as np

        array = np.frombuffer(host, dtype=np.uint8)  # the host address, read-only buffers too
        address = int(array.ctypes.data)
        source, destination = (pointer, address) if kind == "cudaMemcpyDeviceToHost" else (address, pointer)
        cudart = self._cudart
        self._check("cudaSetDevice", cudart.cudaSetDevice(device))
        copied = cudart.cudaMemcpy(destination, source, size, getattr(cudart.cudaMemcpyKind, kind))
        self._check("cudaMemcpy", copied)


def probe_cuda() -> CudaIpc | str:
    """The cuda-python runtime when it is installed and sees a device, else why not."""
    try:
        import cuda.bindings.runtime as cudart  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        try:  # cuda-python before 12.6 named the module cuda.cudart
            from cuda import cudart  # type: ignore[import-not-found,no-redef,unused-ignore]
        except ImportError:
            return NOT_INSTALLED
    runtime = CudaPythonIpc(cudart)
    try:
        count = runtime.device_count()
    except InvalidInput as exc:  # no driver, no device: CUDA's own words
        return exc.message
    return runtime if count > 0 else NO_DEVICE


def check_cuda_register(raw_handle: Any, device_id: Any, byte_size: Any) -> tuple[bytes, int, int]:
    """The checked fields of a register request: (cudaIpcMemHandle_t bytes, device, size)."""
    if isinstance(raw_handle, dict):  # HTTP: {"b64": "..."}
        encoded = raw_handle.get("b64")
        try:
            raw_handle = base64.b64decode(encoded, validate=True) if isinstance(encoded, str) else None
        except binascii.Error:
            raw_handle = None
    if not isinstance(raw_handle, bytes) or len(raw_handle) != CUDA_IPC_HANDLE_SIZE:
        raise InvalidInput("'raw_handle' must be a valid base64 encoded cudaIpcMemHandle_t")
    return raw_handle, count_field(device_id, "device_id"), count_field(byte_size, "byte_size")


def cuda_unavailable(reason: str) -> GpuRequired:
    return GpuRequired(
        f"CUDA shared memory needs a GPU and a CUDA IPC library: {reason}; "
        "use system shared memory (/v2/systemsharedmemory) instead"
    )


class CudaRegion:
    """One registered region: `byte_size` bytes at device `pointer` on `device_id`. Its handle
    closes when the table and every request holding it have let go (`hold` / `drop`)."""

    def __init__(self, name: str, device_id: int, byte_size: int, pointer: int, runtime: CudaIpc) -> None:
        self.name = name
        self.device_id = device_id
        self.byte_size = byte_size
        self.pointer = pointer
        self._runtime = runtime
        self._holders = 1  # the table
        self._lock = threading.Lock()  # a dropped target's __del__ may run on any thread

    @property
    def is_open(self) -> bool:
        return self._holders > 0

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "device_id": self.device_id, "byte_size": self.byte_size}

    def span(self, offset: int, size: int) -> int:
        """The device address of `size` bytes at `offset`; refuses what does not fit. Compared as
        size > byte_size - offset: the sum of two int64s from the network could overflow in C."""
        if offset < 0 or size < 0 or size > self.byte_size - offset:
            raise InvalidInput(f"Invalid offset + byte size for shared memory region: '{self.name}'")
        return self.pointer + offset

    def hold(self) -> None:
        with self._lock:
            if self._holders <= 0:
                raise InvalidInput(f"shared memory region '{self.name}' was unregistered")
            self._holders += 1

    def drop(self) -> None:
        with self._lock:
            if self._holders <= 0:
                return
            self._holders -= 1
            if self._holders:
                return
        try:
            self._runtime.close(self.pointer, self.device_id)
        except Exception as exc:  # the client may have freed its memory first; nothing to undo
            logger.warning("closing CUDA shared memory region '%s': %s", self.name, exc)

    def read(self, offset: int, size: int) -> bytearray:
        """`size` bytes at `offset`, copied to host (held meanwhile)."""
        address = self.span(offset, size)
        self.hold()
        try:
            data = bytearray(size)
            self._runtime.to_host(address, self.device_id, memoryview(data))
            return data
        finally:
            self.drop()

    def write(self, offset: int, data: memoryview) -> None:
        """Copy `data` to `offset` (the caller holds the region)."""
        self._runtime.from_host(self.span(offset, data.nbytes), self.device_id, data)


class CudaOutputTarget:
    """Where one requested output goes in a CUDA region: the OutputTarget interface
    (shm_regions.py), holding the region open until `release`. Workers never write it."""

    __slots__ = ("_region", "byte_size", "name", "offset", "written")

    direct = False  # only the front end copies to the device
    fd = -1

    def __init__(self, region: CudaRegion, offset: int, byte_size: int) -> None:
        self._region: CudaRegion | None = None  # set last: a span refused below leaves nothing held
        self.written = False
        self.name = region.name
        self.offset = offset
        self.byte_size = byte_size
        region.span(offset, byte_size)
        region.hold()
        self._region = region

    def write(self, output_name: str, data: bytes | bytearray | memoryview) -> None:
        view = fitting_output(output_name, data, self.byte_size)
        region = self._region
        if region is None:
            raise InvalidInput(f"shared memory region '{self.name}' was released before the output came")
        region.write(self.offset, view)

    def release(self) -> None:
        region, self._region = self._region, None
        if region is not None:
            region.drop()

    def __del__(self) -> None:  # a request dropped without an answer still lets the region go
        with contextlib.suppress(Exception):
            self.release()


class CudaRegionTable(Regions[CudaRegion]):
    """The registered CUDA regions of one server (both protocols share it). With `system`, the two
    tables share one name space, and tensors naming a CUDA region find it through `system.cuda`."""

    kind = "cuda"

    def __init__(
        self,
        *,
        allowed: bool,
        runtime_factory: RuntimeFactory = probe_cuda,
        system: RegionTable | None = None,
        max_regions: int = MAX_REGIONS,
    ) -> None:
        super().__init__(allowed=allowed, max_regions=max_regions)
        self._runtime_factory = runtime_factory
        self._runtime: CudaIpc | str | None = None  # probed on the first register, then kept
        self.system = system
        if system is not None:
            system.cuda = self

    def _let_go(self, region: CudaRegion) -> None:
        region.drop()  # an in-flight request still holding it closes the handle when it lets go

    def runtime(self) -> CudaIpc:
        """The CUDA runtime; GpuRequired with the reason when there is none."""
        if self._runtime is None:
            self._runtime = self._runtime_factory()
        if isinstance(self._runtime, str):
            raise cuda_unavailable(self._runtime)
        return self._runtime

    # -- the extension's API ---------------------------------------------------------------------
    def register(self, name: Any, raw_handle: Any, device_id: Any, byte_size: Any) -> None:
        if not self.allowed:
            raise Forbidden(DISABLED_MESSAGE)
        name = check_name(name)
        handle, device_id, byte_size = check_cuda_register(raw_handle, device_id, byte_size)
        runtime = self.runtime()
        self._check_room(name, self.system)
        if byte_size == 0:
            raise InvalidInput(f"Invalid shared memory region '{name}': byte_size must be positive")
        devices = runtime.device_count()
        if device_id >= devices:
            raise InvalidInput(
                f"Invalid device id {device_id}: this server sees {devices} CUDA device(s); "
                f"could not register region '{name}'"
            )
        try:
            pointer = runtime.open(handle, device_id)
        except InvalidInput as exc:
            raise InvalidInput(f"failed to open CUDA IPC handle of region '{name}': {exc.message}") from None
        self._regions[name] = CudaRegion(name, device_id, byte_size, pointer, runtime)

    # -- tensors ---------------------------------------------------------------------------------
    def read_input(self, name: str, offset: int, byte_size: int) -> bytearray:
        """An input's bytes, copied to host now."""
        return self.region(name).read(offset, byte_size)

    def output_target(self, name: str, offset: int, byte_size: int) -> CudaOutputTarget:
        return CudaOutputTarget(self.region(name), offset, byte_size)
