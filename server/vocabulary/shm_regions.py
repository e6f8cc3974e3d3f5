"""Client shared memory: the table of registered system shared-memory regions (Triton's extension).

A client creates a POSIX shared-memory object (`shm_open`, i.e. a file in /dev/shm), registers a
region of it (`key`, `offset`, `byte_size`) under a name, and then names that region instead of
sending tensor bytes: inputs are read from it, requested outputs are written into it.

Safety, because the key comes from the network (Triton's own CVE history is here):
- only POSIX shared-memory objects: the key is one path component (an optional leading "/", no
  other "/", not "." or "..", no NUL), opened in /dev/shm with O_NOFOLLOW, and it must be a
  regular file on the /dev/shm file system; our own arenas are memfd files with no name at all;
- offset + byte_size is checked against the object's real size at registration, and every access
  is bounds-checked again at use against the region and the object's size at that moment;
- bytes move with pread/pwrite on the object's descriptor, never through a mapping: a client that
  shrinks its object cannot fault the server (SIGBUS), it gets an error instead;
- an output target and a region input hold their own duplicate of the descriptor, so a region
  unregistered while a request uses it stays open until that request ends (Triton #7743 was a use
  after free there);
- a region input is not read when decoded: its Tensor carries a RegionInput (`Tensor.source`) and
  a placeholder of the right length, and the bytes are read once, where they are needed: by the
  worker into its arena (workers/client_inputs.py), or in the main process (`materialize`);
- names, keys and the number of regions are bounded; descriptors close at unregister and exit.

Registration is off unless the server runs with `--allow-client-shm=true` (README says why).
CUDA regions (cuda_regions.py) share this table's name space through `RegionTable.cuda`.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import stat
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from server.errors import Forbidden, InvalidInput, RegionExists, RegionNotFound
from server.vocabulary.types import InferenceRequest

if TYPE_CHECKING:  # cuda_regions.py builds on this module
    from server.vocabulary.cuda_regions import CudaRegionTable

SHM_DIRECTORY = "/dev/shm"
MAX_REGIONS = 1024
MAX_NAME_LENGTH = 256
_KEY = re.compile(r"/?[^/\x00]{1,255}")
_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,256}")  # MAX_NAME_LENGTH printable characters
_MAX_INT64 = (1 << 63) - 1

# The tensor parameters of the extension.
REGION = "shared_memory_region"
# Where a RequestedOutput's parameters hold its OutputTarget (the worker channel looks there).
TARGET = "__shared_memory_target__"
OFFSET = "shared_memory_offset"
BYTE_SIZE = "shared_memory_byte_size"

DISABLED_MESSAGE = (
    "client shared memory is disabled on this server: start it with --allow-client-shm=true "
    "to register shared-memory regions"
)


def count_field(value: Any, what: str) -> int:
    """A non-negative int64 from the network (JSON or protobuf): no bools, floats or strings."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_INT64:
        raise InvalidInput(f"Unable to parse '{what}': expected a non-negative integer, got {value!r}")
    return value


def check_key(key: Any) -> str:
    """The key of a POSIX shared-memory object; anything that could name another file is refused."""
    if not isinstance(key, str) or not _KEY.fullmatch(key) or key.lstrip("/") in (".", ".."):
        raise InvalidInput(
            f"Invalid shared memory key {key!r}: expected the name of a POSIX shared-memory object "
            "(one path component such as '/my_region', as given to shm_open)"
        )
    return key


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInput(
            f"Invalid shared memory region name {name!r}: 1 to {MAX_NAME_LENGTH} printable characters"
        )
    return name


def _open_object(key: str) -> tuple[int, int]:
    """(fd, size) of the POSIX shared-memory object `key`, opened read-write."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        fd = os.open(Path(SHM_DIRECTORY) / key.lstrip("/"), flags)
    except OSError:
        raise InvalidInput(f"Unable to open shared memory region: '{key}'") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_dev != Path(SHM_DIRECTORY).stat().st_dev:
            raise InvalidInput(f"Unable to open shared memory region: '{key}' is not a shared-memory object")
    except BaseException:
        os.close(fd)
        raise
    return fd, info.st_size


@dataclass(slots=True)
class SystemRegion:
    """One registered region: `byte_size` bytes at `offset` of the object `key`."""

    name: str
    key: str
    offset: int
    byte_size: int
    fd: int

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "key": self.key, "offset": self.offset, "byte_size": self.byte_size}

    def span(self, offset: int, size: int) -> int:
        """The object offset of `size` bytes at `offset` in the region; refuses what does not fit."""
        if offset < 0 or size < 0 or offset + size > self.byte_size:
            raise InvalidInput(f"Invalid offset + byte size for shared memory region: '{self.name}'")
        return self.offset + offset

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def output_too_small(output_name: str, byte_size: int, needed: int) -> InvalidInput:
    return InvalidInput(
        f"shared memory size specified with the request for output '{output_name}' "
        f"({byte_size} bytes) should be at least {needed} bytes to hold the results"
    )


def fitting_output(output_name: str, data: bytes | bytearray | memoryview, byte_size: int) -> memoryview:
    """The output's bytes, refused (Triton's message) when its region span is too small."""
    view = memoryview(data).cast("B")
    if view.nbytes > byte_size:
        raise output_too_small(output_name, byte_size, view.nbytes)
    return view


class OutputTarget:
    """Where one requested output goes: a span of a region, with its own duplicate descriptor, so
    the span stays writable until the request ends even if the region is unregistered meanwhile."""

    __slots__ = ("byte_size", "direct", "fd", "key", "name", "position", "written")

    def __init__(self, region: SystemRegion, offset: int, byte_size: int) -> None:
        self.fd = -1  # set last: a span refused below leaves nothing to release
        # direct: the worker may write the output itself (no response cache would keep an empty
        # answer); written: it did, so the front end has nothing left to write.
        self.direct = False
        self.written = False
        self.name = region.name
        self.key = region.key
        self.byte_size = byte_size
        self.position = region.span(offset, byte_size)
        self.fd = os.dup(region.fd)

    def write(self, output_name: str, data: bytes | bytearray | memoryview) -> None:
        """Write the output's bytes (at most byte_size) into the region."""
        view = fitting_output(output_name, data, self.byte_size)
        if self.fd < 0:
            raise InvalidInput(f"shared memory region '{self.name}' was released before the output came")
        end = self.position + view.nbytes
        if os.fstat(self.fd).st_size < end:
            raise InvalidInput(
                f"shared memory region '{self.name}' is smaller than registered: its object "
                f"'{self.key}' was truncated"
            )
        written = 0
        while written < view.nbytes:
            written += os.pwrite(self.fd, view[written:], self.position + written)

    def release(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:  # a request dropped without an answer still lets its descriptor go
        self.release()


class RegionInput:
    """An input still in a client's region: `byte_size` bytes at `position` of the object, with a
    duplicate descriptor of its own (unregistering the region cannot close it under the request)."""

    __slots__ = ("byte_size", "fd", "inode", "key", "name", "position")

    def __init__(self, region: SystemRegion, offset: int, byte_size: int) -> None:
        """Checked against the region and the object's size now (InvalidInput)."""
        self.fd = -1
        self.name = region.name
        self.key = region.key
        self.byte_size = byte_size
        self.position = region.span(offset, byte_size)
        self.fd = os.dup(region.fd)
        info = os.fstat(self.fd)
        self.inode = (info.st_dev, info.st_ino)  # inputs of one object share a descriptor (client_inputs.py)
        if info.st_size < self.position + byte_size:
            self.release()
            raise self.truncated()

    def truncated(self) -> InvalidInput:
        return InvalidInput(
            f"shared memory region '{self.name}' is smaller than registered: its object "
            f"'{self.key}' was truncated"
        )

    def read_into(self, view: memoryview) -> None:
        """Read the input into `view` (byte_size bytes); InvalidInput if the object is too short now."""
        if self.fd < 0:
            raise InvalidInput(f"shared memory region '{self.name}' was released before its input was read")
        if not read_fully(self.fd, view, self.position):
            raise self.truncated()

    def read(self) -> bytearray:
        data = bytearray(self.byte_size)
        self.read_into(memoryview(data))
        return data

    def release(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:  # a request dropped before its input was read lets the descriptor go
        self.release()


def read_fully(fd: int, view: memoryview, position: int) -> bool:
    """preadv until `view` is full; False when the file ends first (a truncated object)."""
    done, size = 0, view.nbytes
    while done < size:
        count = os.preadv(fd, [view[done:]], position + done)
        if count <= 0:
            return False
        done += count
    return True


class _Placeholder:
    """Read-only zero bytes standing for inputs not read yet: only their length is ever used."""

    map: mmap.mmap | None = None
    view = memoryview(b"")

    @classmethod
    def of(cls, size: int) -> memoryview:
        if size > cls.view.nbytes:
            cls.map = mmap.mmap(-1, max(size, 64 << 20), prot=mmap.PROT_READ)  # the zero page: no memory
            cls.view = memoryview(cls.map)
        return cls.view[:size]


def placeholder(size: int) -> memoryview:
    return _Placeholder.of(size)


def materialize(request: InferenceRequest) -> None:
    """Read the request's region inputs here, in the main process (InvalidInput if truncated)."""
    for tensor in request.inputs:
        source = tensor.source
        if source is not None:
            try:
                tensor.data = source.read()
            finally:
                source.release()
            tensor.source = None


def shm_parameters(parameters: dict[str, Any], tensor: str) -> tuple[str, int, int] | None:
    """(region, offset, byte_size) when a tensor's parameters name a region, else None.

    Pops the three parameters, so they do not travel on to the model."""
    if REGION not in parameters:
        if BYTE_SIZE in parameters or OFFSET in parameters:
            raise InvalidInput(f"'{BYTE_SIZE}' or '{OFFSET}' of '{tensor}' given without '{REGION}'")
        return None
    region = parameters.pop(REGION)
    if not isinstance(region, str):
        raise InvalidInput(f"Unable to parse '{REGION}' of '{tensor}': expected a string")
    if BYTE_SIZE not in parameters:
        raise InvalidInput(f"Invalid offset + byte size for shared memory region: '{region}'")
    size = count_field(parameters.pop(BYTE_SIZE), BYTE_SIZE)
    offset = count_field(parameters.pop(OFFSET, 0), OFFSET)
    return region, offset, size


class _Registered(Protocol):
    def status(self) -> dict[str, Any]: ...


AnyRegion = TypeVar("AnyRegion", bound=_Registered)


class Regions(Generic[AnyRegion]):
    """What the system and CUDA tables share: the switch, the names and their limit, status,
    unregister and lookup. `kind` names the table in Triton's status error."""

    kind = ""

    def __init__(self, *, allowed: bool, max_regions: int = MAX_REGIONS) -> None:
        self.allowed = allowed
        self.max_regions = max_regions
        self._regions: dict[str, AnyRegion] = {}

    def __len__(self) -> int:
        return len(self._regions)

    def __contains__(self, name: object) -> bool:
        return name in self._regions

    def _check_room(self, name: str, others: Container[str] | None) -> None:
        """A new region's name is free in both tables (one name space, as Triton's one manager),
        and this table has room for it."""
        if name in self._regions or (others is not None and name in others):
            raise RegionExists(f"shared memory region '{name}' already in manager")
        if len(self._regions) >= self.max_regions:
            raise InvalidInput(
                f"too many shared memory regions: {self.max_regions} are registered; unregister one first"
            )

    def _let_go(self, region: AnyRegion) -> None:
        """The table's hold on an unregistered region ends."""
        raise NotImplementedError

    def status(self, name: str = "") -> list[dict[str, Any]]:
        if not name:
            return [region.status() for region in self._regions.values()]
        region = self._regions.get(name)
        if region is None:
            raise RegionNotFound(f"Unable to find {self.kind} shared memory region: '{name}'")
        return [region.status()]

    def unregister(self, name: str = "") -> None:
        """Forget one region (no error when it is unknown, like Triton) or, without a name, all."""
        names = [name] if name else list(self._regions)
        for each in names:
            region = self._regions.pop(each, None)
            if region is not None:
                self._let_go(region)

    def close(self) -> None:
        self.unregister()

    def region(self, name: str) -> AnyRegion:
        if not self.allowed:
            raise Forbidden(DISABLED_MESSAGE)
        region = self._regions.get(name)
        if region is None:
            raise RegionNotFound(f"Unable to find shared memory region: '{name}'")
        return region


class RegionTable(Regions[SystemRegion]):
    """The registered system shared-memory regions of one server (both protocols share it)."""

    kind = "system"

    def __init__(self, *, allowed: bool, max_regions: int = MAX_REGIONS) -> None:
        super().__init__(allowed=allowed, max_regions=max_regions)
        # The CUDA table (cuda_regions.py) when the server has one: Triton keeps one name space
        # across both, and tensors naming a CUDA region go there (protocol/shm_tensors.py).
        self.cuda: CudaRegionTable | None = None

    def _let_go(self, region: SystemRegion) -> None:
        region.close()

    def close(self) -> None:
        super().close()
        if self.cuda is not None:
            self.cuda.close()  # every IPC handle no in-flight output holds any more

    # -- the extension's API ---------------------------------------------------------------------
    def register(self, name: Any, key: Any, offset: Any, byte_size: Any) -> None:
        if not self.allowed:
            raise Forbidden(DISABLED_MESSAGE)
        name = check_name(name)
        key = check_key(key)
        offset = count_field(offset, "offset")
        byte_size = count_field(byte_size, "byte_size")
        self._check_room(name, self.cuda)
        fd, object_size = _open_object(key)
        if byte_size == 0 or offset + byte_size > object_size:
            os.close(fd)
            raise InvalidInput(
                f"Invalid shared memory region: '{key}' holds {object_size} bytes, which cannot hold "
                f"{byte_size} bytes at offset {offset}"
            )
        self._regions[name] = SystemRegion(name, key, offset, byte_size, fd)

    # -- tensors ---------------------------------------------------------------------------------
    def read_input(self, name: str, offset: int, byte_size: int) -> bytearray:
        """An input's bytes now (checked as `input_source` checks them)."""
        source = self.input_source(name, offset, byte_size)
        try:
            return source.read()
        finally:
            source.release()

    def input_source(self, name: str, offset: int, byte_size: int) -> RegionInput:
        """An input to read later (checked against the region and the object's size now)."""
        return RegionInput(self.region(name), offset, byte_size)

    def output_target(self, name: str, offset: int, byte_size: int) -> OutputTarget:
        return OutputTarget(self.region(name), offset, byte_size)
