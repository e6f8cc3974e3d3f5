"""Outputs written by the worker straight into a client's shared-memory region (zero copy on the main side).

A requested output that names a client region carries an OutputTarget (vocabulary/shm_regions.py)
in its parameters. When the front end allows it (`target.direct`: no response cache to feed), the
channel sends the target's descriptor with the batch (SCM_RIGHTS) and `[request, output, position,
byte size]` in the exec record (`"shm"`); the worker writes the output there with pwrite instead of
into its arena, bounds- and size-checked again, and answers `"w": [names]`; the main process then
neither copies the output out of the arena nor into the region. Otherwise the front end writes it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from server.errors import InvalidInput, ServerError
from server.vocabulary.shm_regions import TARGET, OutputTarget, output_too_small
from server.vocabulary.types import InferenceRequest
from server.workers.batch_io import SelectedOutputs

MAX_DIRECT = 12  # descriptors per batch (the worker's receiver takes 16 with the arena's)

DirectTarget = tuple[int, str, OutputTarget]  # request index, output name, target


def direct_targets(requests: Sequence[InferenceRequest]) -> list[DirectTarget]:
    """The outputs of this batch the worker may write itself (none when there are too many)."""
    found: list[DirectTarget] = []
    for index, request in enumerate(requests):
        for output in request.outputs:
            target = output.parameters.get(TARGET) if output.parameters else None
            if isinstance(target, OutputTarget) and target.direct and target.fd >= 0:
                found.append((index, output.name, target))
    return found if len(found) <= MAX_DIRECT else []


def attach(record: dict[str, Any], found: list[DirectTarget]) -> list[int]:
    """Describe the targets in the exec record; the descriptors to send, in the same order."""
    record["shm"] = [[index, name, target.position, target.byte_size] for index, name, target in found]
    return [target.fd for _, _, target in found]


def mark_written(request: InferenceRequest, names: list[str]) -> None:
    for output in request.outputs:
        if output.name in names and output.parameters:
            target = output.parameters.get(TARGET)
            if isinstance(target, OutputTarget):
                target.written = True


def write_direct(
    selected: list[SelectedOutputs | ServerError], plan: list[list[Any]], fds: list[int]
) -> dict[int, list[str]]:
    """In the worker: write each planned output into its region, leave it empty for the arena;
    a request whose output does not fit gets Triton's error instead. Returns index -> names."""
    written: dict[int, list[str]] = {}
    for (index, name, position, byte_size), fd in zip(plan, fds, strict=True):
        answer = selected[index]
        if isinstance(answer, ServerError):
            continue
        for number, (tensor_name, datatype, shape, data) in enumerate(answer.tensors):
            if tensor_name != name:
                continue
            view = _bytes_view(data)
            if view.nbytes > byte_size:
                selected[index] = output_too_small(name, byte_size, view.nbytes)
                break
            if os.fstat(fd).st_size < position + view.nbytes:
                selected[index] = InvalidInput(
                    f"shared memory region for output '{name}' is smaller than registered: "
                    "its object was truncated"
                )
                break
            done = 0
            while done < view.nbytes:
                done += os.pwrite(fd, view[done:], position + done)
            answer.tensors[number] = (tensor_name, datatype, shape, b"")
            written.setdefault(index, []).append(name)
            break
    return {index: names for index, names in written.items() if not isinstance(selected[index], ServerError)}


def _bytes_view(data: Any) -> memoryview:
    if isinstance(data, bytes):
        return memoryview(data)
    array: Any = np.ascontiguousarray(data)
    return memoryview(array.reshape(-1).view(np.uint8))
