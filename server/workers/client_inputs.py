"""Inputs the worker reads itself from a client's shared-memory region (no copy in the main process).

An input in a client region reaches the channel unread when the DataPlane lets it
(`LoadedVersion.reads_region_inputs`): its Tensor holds a RegionInput (`source`: a duplicate
descriptor, the object position and the size) and a placeholder. The channel leaves the arena span
of such an input to the worker: it sends one descriptor per shared-memory object of the batch
(SCM_RIGHTS, before the outputs' of client_outputs.py) and, in the exec record,
`"in": [[request index, arena offset, object position, size, descriptor number, input name]]`
and `"nfd"` (how many descriptors); the worker preads each span into its arena before it builds
the batch (the one copy of those bytes), bounds-checked by the read itself: a client that shrank
its object since gets an error for that request only (`failed`), never a fault, and the other
requests of the batch run. Past MAX_DESCRIPTORS objects, or in a record too large to go inline,
the main process preads the spans into the arena itself and names the requests whose read fell
short in `"bad": [[request index, input name]]`. The sources are released once the batch is sent:
the worker holds its own descriptors then (unregistering a region cannot pull them away).
"""

from __future__ import annotations

import os
from typing import Any

from server.backends.base import Backend, Batch, RequestOutputs
from server.errors import InvalidInput, ServerError
from server.vocabulary.shm_regions import RegionInput, read_fully
from server.workers.batch_io import execute_batch

MAX_DESCRIPTORS = 32  # objects per batch; the receiver takes 64 descriptors (with the outputs' 12)

Sourced = tuple[int, int, str, RegionInput]  # arena offset, request index, input name, source


def attach_inputs(record: dict[str, Any], sourced: list[Sourced]) -> list[int]:
    """Plan the worker's reads in the exec record; the descriptors to send, in order. [] (and no
    plan) when the batch names too many objects: the main process reads them then."""
    numbers: dict[tuple[int, int], int] = {}
    fds: list[int] = []
    plan: list[list[Any]] = []
    for offset, index, name, source in sourced:
        number = numbers.get(source.inode)
        if number is None:
            if source.fd < 0 or len(fds) == MAX_DESCRIPTORS:
                return []
            number = numbers[source.inode] = len(fds)
            fds.append(source.fd)
        plan.append([index, offset, source.position, source.byte_size, number, name])
    record["in"] = plan
    record["nfd"] = len(fds)
    return fds


def detach_inputs(record: dict[str, Any]) -> None:
    record.pop("in", None)
    record.pop("nfd", None)


def spill_reserve(sourced: list[Sourced]) -> dict[str, Any]:
    """The longest "bad" entry reading `sourced` in the main process can add to the record."""
    return {"bad": [[index, name] for _, index, name, _ in sourced]}


def read_in_main(view: memoryview, record: dict[str, Any], sourced: list[Sourced]) -> None:
    """Read the spans into the arena here; a short read names its request in `"bad"`."""
    bad: list[list[Any]] = []
    for offset, index, name, source in sourced:
        try:
            source.read_into(view[offset : offset + source.byte_size])
        except InvalidInput:
            bad.append([index, name])
    if bad:
        record["bad"] = bad


def release(sourced: list[Sourced]) -> None:
    for _, _, _, source in sourced:
        source.release()


def truncated(name: str) -> InvalidInput:
    return InvalidInput(
        f"shared memory region for input '{name}' is smaller than registered: its object was truncated"
    )


# -- in the worker -----------------------------------------------------------------------------------


def read_inputs(record: dict[str, Any], fds: list[int], view: memoryview) -> dict[int, ServerError]:
    """Read the planned spans into the arena; request index -> error for those that fell short.
    Closes the descriptors."""
    failed: dict[int, ServerError] = {index: truncated(name) for index, name in record.get("bad", ())}
    try:
        for index, offset, position, size, number, name in record.get("in", ()):
            if index not in failed and not _read(fds[number], view[offset : offset + size], position):
                failed[index] = truncated(name)
    finally:
        for fd in fds:
            os.close(fd)
    return failed


def _read(fd: int, view: memoryview, position: int) -> bool:
    try:
        return read_fully(fd, view, position)
    except OSError:
        return False


def execute_without(
    backend: Backend, batch: Batch, failed: dict[int, ServerError]
) -> list[RequestOutputs | ServerError]:
    """Run the batch without the requests whose inputs could not be read; they get their errors."""
    kept = [request for index, request in enumerate(batch.requests) if index not in failed]
    answers = iter(execute_batch(backend, Batch(kept, {})) if kept else [])
    return [failed[index] if index in failed else next(answers) for index in range(len(batch.requests))]
