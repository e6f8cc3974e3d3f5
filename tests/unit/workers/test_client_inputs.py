"""Inputs in client regions: RegionInput, the channel's plan, the worker's reads (no processes)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from server.backends.base import Backend, Batch, RequestOutputs
from server.core.model_version import LoadedVersion
from server.errors import InvalidInput, ServerError
from server.vocabulary.shm_regions import RegionTable, materialize, placeholder
from server.vocabulary.types import InferenceRequest, Tensor
from server.workers.client_inputs import (
    MAX_DESCRIPTORS,
    Sourced,
    attach_inputs,
    execute_without,
    read_in_main,
    read_inputs,
    release,
)
from server.workers.shm import Segment


@pytest.fixture
def table() -> Iterator[tuple[RegionTable, Path]]:
    path = Path("/dev/shm") / f"tritonctl_unit_{uuid.uuid4().hex[:10]}"
    path.write_bytes(bytes(range(256)) * 4)
    regions = RegionTable(allowed=True)
    regions.register("r", "/" + path.name, 0, 1024)
    regions.register("r2", "/" + path.name, 512, 512)
    try:
        yield regions, path
    finally:
        regions.close()
        path.unlink(missing_ok=True)


def test_a_region_input_is_checked_now_and_read_later(table: tuple[RegionTable, Path]) -> None:
    regions, path = table
    source = regions.input_source("r2", 16, 8)
    assert source.position == 528
    request = InferenceRequest("m", "", [Tensor("x", "UINT8", [8], placeholder(8), {}, source)])
    regions.unregister("r2")  # the source keeps its own descriptor
    materialize(request)
    assert bytes(request.inputs[0].data) == bytes(range(16, 24)) and request.inputs[0].source is None
    assert source.fd == -1
    with pytest.raises(InvalidInput, match="Invalid offset"):
        regions.input_source("r", 1020, 8)
    os.truncate(path, 100)
    with pytest.raises(InvalidInput, match="truncated"):
        regions.input_source("r", 96, 8)


def test_inputs_of_one_object_share_a_descriptor(table: tuple[RegionTable, Path]) -> None:
    regions, _ = table
    sourced: list[Sourced] = [
        (0, 0, "a", regions.input_source("r", 0, 64)),
        (64, 1, "a", regions.input_source("r2", 0, 64)),
    ]
    record: dict[str, Any] = {}
    fds = attach_inputs(record, sourced)
    assert len(fds) == 1 and record["nfd"] == 1
    assert record["in"] == [[0, 0, 0, 64, 0, "a"], [1, 64, 512, 64, 0, "a"]]
    release(sourced)
    assert all(source.fd == -1 for *_, source in sourced)


def test_too_many_objects_are_read_in_the_main_process(tmp_path: Path) -> None:
    regions = RegionTable(allowed=True)
    paths = []
    sourced: list[Sourced] = []
    try:
        for number in range(MAX_DESCRIPTORS + 1):
            path = Path("/dev/shm") / f"tritonctl_unit_{uuid.uuid4().hex[:10]}"
            path.write_bytes(bytes([number]) * 8)
            paths.append(path)
            regions.register(f"r{number}", "/" + path.name, 0, 8)
            sourced.append((8 * number, number, "x", regions.input_source(f"r{number}", 0, 8)))
        record: dict[str, Any] = {}
        assert attach_inputs(record, sourced) == [] and "in" not in record
        os.truncate(paths[3], 4)  # shrunk after the request was checked
        arena = Segment.create("unit", 8 * len(sourced))
        read_in_main(arena.view, record, sourced)
        assert record["bad"] == [[3, "x"]]
        assert bytes(arena.view[16:24]) == bytes([2]) * 8
        failed = read_inputs(record, [], arena.view)
        assert list(failed) == [3] and "truncated" in failed[3].message
        arena.close()
    finally:
        release(sourced)
        regions.close()
        for path in paths:
            path.unlink(missing_ok=True)


def test_the_worker_reads_spans_and_reports_short_ones(table: tuple[RegionTable, Path]) -> None:
    _, path = table
    record = {"in": [[0, 0, 8, 8, 0, "a"], [1, 64, 1010, 24, 0, "b"]], "nfd": 1}
    arena = Segment.create("unit", 128)
    fd = os.open(path, os.O_RDONLY)
    failed = read_inputs(record, [fd], arena.view)
    assert bytes(arena.view[:8]) == bytes(range(8, 16))
    assert list(failed) == [1] and "input 'b'" in failed[1].message
    with pytest.raises(OSError):
        os.fstat(fd)  # closed by read_inputs
    arena.close()


class _Echo(Backend):
    batches: list[int]

    def load(self) -> None:
        pass

    def execute(self, batch: Batch) -> list[RequestOutputs | ServerError]:
        self.batches.append(len(batch.requests))
        return [{} for _ in batch.requests]


def test_the_others_run_without_the_failed_requests() -> None:
    backend: Any = _Echo.__new__(_Echo)
    backend.batches = []
    requests: Any = [object(), object(), object()]
    error = InvalidInput("short")
    results = execute_without(backend, Batch(requests, {}), {1: error})
    assert results[1] is error and results[0] == {} and results[2] == {}
    assert backend.batches == [2]


BASE = (
    'name: "m" backend: "python" max_batch_size: 8 '
    'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] %s } ]'
)


@pytest.mark.parametrize(
    ("extra", "input_extra", "expected"),
    [
        ("", "", True),
        ('parameters { key: "TRITONCTL_INSTANCE_MODE" value { string_value: "process" } }', "", True),
        ('parameters { key: "TRITONCTL_INSTANCE_MODE" value { string_value: "thread" } }', "", False),
        ('parameters { key: "TRITONCTL_INSTANCE_MODE" value { string_value: "inline" } }', "", False),
        ("sequence_batching {}", "", False),
        ("dynamic_batching {}", "is_shape_tensor: true", False),
    ],
)
def test_which_models_read_region_inputs_in_their_workers(
    extra: str, input_extra: str, expected: bool
) -> None:
    config = text_format.Parse(f"{BASE % input_extra} {extra}", model_config_pb2.ModelConfig())
    loaded: Any = LoadedVersion.__new__(LoadedVersion)
    loaded.config, loaded.channels = config, [object()]
    assert loaded.reads_region_inputs is expected
    ensemble: Any = LoadedVersion.__new__(LoadedVersion)
    ensemble.config = text_format.Parse('name: "e" platform: "ensemble"', model_config_pb2.ModelConfig())
    ensemble.channels = []
    assert ensemble.reads_region_inputs is False
