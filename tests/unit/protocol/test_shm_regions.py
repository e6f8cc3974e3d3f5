"""The region table (server/vocabulary/shm_regions.py) without a server: keys, bounds, lifetimes.

Regions are real POSIX shared-memory objects (multiprocessing.shared_memory), removed at the end.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterator
from multiprocessing import shared_memory
from pathlib import Path

import pytest

from server.errors import Forbidden, GpuRequired, InvalidInput, RegionExists, RegionNotFound
from server.vocabulary.cuda_regions import CudaRegionTable
from server.vocabulary.shm_regions import RegionTable


@pytest.fixture
def block() -> Iterator[shared_memory.SharedMemory]:
    made = shared_memory.SharedMemory(name=f"tritonctl_unit_{uuid.uuid4().hex[:10]}", create=True, size=4096)
    try:
        yield made
    finally:
        made.close()
        made.unlink()


def _key(block: shared_memory.SharedMemory) -> str:
    return "/" + block.name


def test_register_read_write_unregister(block: shared_memory.SharedMemory) -> None:
    table = RegionTable(allowed=True)
    assert block.buf is not None
    block.buf[100:104] = b"abcd"
    table.register("r", _key(block), 64, 1024)
    assert table.status() == [{"name": "r", "key": _key(block), "offset": 64, "byte_size": 1024}]
    assert table.read_input("r", 36, 4) == b"abcd"  # region offset 64 + 36 = object offset 100
    target = table.output_target("r", 0, 8)
    target.write("OUT", b"12345678")
    assert bytes(block.buf[64:72]) == b"12345678"
    target.release()
    table.unregister("r")
    assert table.status() == []
    table.unregister("r")  # unknown: no error


@pytest.mark.parametrize(
    "key",
    ["../etc/passwd", "/../x", "/a/b", "..", ".", "/", "", "x" * 256, "a\x00b", "/proc/self/mem", 5, None],
)
def test_only_posix_shm_names_are_keys(key: object) -> None:
    with pytest.raises(InvalidInput):
        RegionTable(allowed=True).register("r", key, 0, 16)


def test_symlinks_and_missing_objects_are_refused() -> None:
    name = f"tritonctl_unit_link_{uuid.uuid4().hex[:8]}"
    link = Path("/dev/shm") / name
    link.symlink_to("/etc/hostname")
    try:
        with pytest.raises(InvalidInput, match="Unable to open"):
            RegionTable(allowed=True).register("r", "/" + name, 0, 4)
    finally:
        link.unlink()
    with pytest.raises(InvalidInput, match="Unable to open"):
        RegionTable(allowed=True).register("r", f"/{name}_missing", 0, 4)


@pytest.mark.parametrize(
    ("offset", "size"),
    [(0, 4097), (4000, 97), (0, 0), (2**63 - 1, 2), (-1, 1), (0, -5), (True, 4), ("0", 4), (0, 1.0)],
)
def test_register_sizes(block: shared_memory.SharedMemory, offset: object, size: object) -> None:
    with pytest.raises(InvalidInput):
        RegionTable(allowed=True).register("r", _key(block), offset, size)


def test_every_use_is_checked(block: shared_memory.SharedMemory) -> None:
    table = RegionTable(allowed=True)
    table.register("r", _key(block), 0, 1024)
    for offset, size in ((1000, 25), (-1, 4), (0, 1025), (2**62, 2**62)):
        with pytest.raises(InvalidInput, match="Invalid offset"):
            table.read_input("r", offset, size)
        with pytest.raises(InvalidInput, match="Invalid offset"):
            table.output_target("r", offset, size)
    target = table.output_target("r", 0, 8)
    with pytest.raises(InvalidInput, match="should be at least 9 bytes"):
        target.write("OUT", b"123456789")
    target.release()
    with pytest.raises(RegionNotFound):
        table.read_input("nope", 0, 1)


def test_a_truncated_object_is_an_error(block: shared_memory.SharedMemory) -> None:
    table = RegionTable(allowed=True)
    table.register("r", _key(block), 0, 4096)
    target = table.output_target("r", 2048, 16)
    os.ftruncate(block._fd, 1024)  # the client shrinks its object after registering
    with pytest.raises(InvalidInput, match="truncated"):
        table.read_input("r", 2048, 16)
    with pytest.raises(InvalidInput, match="truncated"):
        target.write("OUT", b"x" * 16)
    target.release()


def test_unregistered_region_stays_writable_for_its_request(block: shared_memory.SharedMemory) -> None:
    table = RegionTable(allowed=True)
    table.register("r", _key(block), 0, 64)
    target = table.output_target("r", 0, 4)
    table.unregister()
    target.write("OUT", b"late")
    assert block.buf is not None and bytes(block.buf[:4]) == b"late"
    target.release()
    target.release()  # twice is harmless


def test_names_counts_and_duplicates(block: shared_memory.SharedMemory) -> None:
    table = RegionTable(allowed=True, max_regions=3)
    for index in range(3):
        table.register(f"r{index}", _key(block), 0, 16)
    with pytest.raises(RegionExists):
        table.register("r0", _key(block), 0, 16)
    with pytest.raises(InvalidInput, match="too many"):
        table.register("r3", _key(block), 0, 16)
    for name in ("", "x" * 257, "bad\nname"):
        with pytest.raises(InvalidInput):
            table.register(name, _key(block), 0, 16)
    table.close()
    assert len(table) == 0


def test_disabled_table_refuses(block: shared_memory.SharedMemory) -> None:
    table = RegionTable(allowed=False)
    with pytest.raises(Forbidden, match="--allow-client-shm"):
        table.register("r", _key(block), 0, 16)
    with pytest.raises(Forbidden):
        table.read_input("r", 0, 1)
    assert table.status() == []


def test_cuda_table_checks_the_request_then_needs_a_gpu() -> None:
    table = CudaRegionTable(allowed=True, runtime_factory=lambda: "this server has no GPU")
    with pytest.raises(InvalidInput, match="cudaIpcMemHandle_t") as bad:
        table.register("c", {"b64": "AAAA"}, 0, 16)
    assert not isinstance(bad.value, GpuRequired)
    with pytest.raises(InvalidInput, match="device_id"):
        table.register("c", {"b64": base64.b64encode(bytes(64)).decode()}, -1, 16)
    with pytest.raises(GpuRequired, match="needs a GPU"):
        table.register("c", {"b64": base64.b64encode(bytes(64)).decode()}, 0, 16)
    with pytest.raises(GpuRequired):
        table.register("c", bytes(64), 0, 16)  # gRPC carries the raw handle
    assert table.status() == []
    with pytest.raises(RegionNotFound):
        table.status("c")
    with pytest.raises(Forbidden):
        CudaRegionTable(allowed=False).register("c", bytes(64), 0, 16)
