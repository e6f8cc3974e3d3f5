"""Tensors in client shared memory, for both front ends (the region table: vocabulary/shm_regions.py).

An input whose parameters name a `shared_memory_region` is checked against the region when the
request is decoded but not read: its Tensor gets a RegionInput (`source`) and a placeholder of the
right length, and the worker reads the bytes into its arena (workers/client_inputs.py) unless the
DataPlane reads them first (`materialize`: models whose bytes are needed in the main process). A
BYTES input is read at once (the request checks count its elements). A requested output that
names one gets an OutputTarget then (the region is checked before the model runs), and its bytes
are written there when the answer is encoded: the answer carries only its name, datatype and
shape (gRPC: an empty raw_output_contents entry keeps the others' positions).

A region name may also be a CUDA region (vocabulary/cuda_regions.py, reached through
`RegionTable.cuda`: one name space, as in Triton): its input is copied to host at once, like a
BYTES input, and its output target is written only here, never by a worker.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from server.errors import InvalidInput, ServerError
from server.protocol.api import DataPlaneApi
from server.vocabulary.cuda_regions import CudaOutputTarget, CudaRegionTable
from server.vocabulary.shm_regions import (
    BYTE_SIZE,
    OFFSET,
    REGION,
    TARGET,
    OutputTarget,
    RegionInput,
    RegionTable,
    placeholder,
    shm_parameters,
)
from server.vocabulary.types import InferenceResult

DISABLED = RegionTable(allowed=False)  # what a front end built without a table refuses with

OutputTargets = dict[str, OutputTarget | CudaOutputTarget]


def names_shared_memory(parameters: dict[str, Any]) -> bool:
    return REGION in parameters or BYTE_SIZE in parameters or OFFSET in parameters


def cuda_table(regions: RegionTable) -> CudaRegionTable:
    """The CUDA table linked to `regions` (server/app.py links them), linking a new one (no GPU
    probed until a register) to a table that has none: front ends sharing `regions` share it too."""
    if regions.cuda is not None:
        return regions.cuda
    return CudaRegionTable(allowed=regions.allowed, system=regions)


def _cuda_table(regions: RegionTable, name: str) -> CudaRegionTable | None:
    """The CUDA table when `name` is one of its regions."""
    cuda = regions.cuda
    return cuda if cuda is not None and name in cuda else None


def region_input(
    regions: RegionTable, parameters: dict[str, Any], name: str, datatype: str
) -> tuple[bytes | bytearray | memoryview, RegionInput | None]:
    """Input `name` in the region its parameters name (the parameters are popped): (placeholder,
    source) to be read later, or (bytes, None) for a BYTES input, read now."""
    found = shm_parameters(parameters, name)
    if found is None:  # only the offset or size was given
        raise InvalidInput(f"input '{name}' sets '{BYTE_SIZE}' or '{OFFSET}' without '{REGION}'")
    region, offset, size = found
    cuda = _cuda_table(regions, region)
    if cuda is not None:
        return cuda.read_input(region, offset, size), None
    if datatype == "BYTES":
        return regions.read_input(region, offset, size), None
    return placeholder(size), regions.input_source(region, offset, size)


def add_output_target(
    regions: RegionTable, targets: OutputTargets, parameters: dict[str, Any], name: str
) -> None:
    """Resolve the region a requested output names into `targets` (its parameters are popped)."""
    if parameters.get("binary_data"):
        raise InvalidInput("Output can't set both 'shared_memory_region' and 'binary_data'")
    found = shm_parameters(parameters, name)
    if found is None:
        raise InvalidInput(f"output '{name}' sets '{BYTE_SIZE}' or '{OFFSET}' without '{REGION}'")
    region, offset, size = found
    previous = targets.pop(name, None)
    if previous is not None:
        previous.release()
    cuda = _cuda_table(regions, region)
    table: RegionTable | CudaRegionTable = regions if cuda is None else cuda
    target = targets[name] = table.output_target(region, offset, size)
    parameters[TARGET] = target  # the worker channel finds it there (direct writes)


def enable_direct_writes(targets: OutputTargets, dataplane: DataPlaneApi, model: str, version: str) -> None:
    """Let the worker write these outputs straight into the client's region (workers/client_outputs.py),
    unless the model's answers are cached: the cache must keep the bytes a direct write leaves out."""
    try:
        caches_answers = dataplane.model_config(model, version).response_cache.enable
    except ServerError:  # submit() gives the request its error
        return
    if not caches_answers:
        for target in targets.values():
            if isinstance(target, OutputTarget):  # a CUDA region's output is copied here, never direct
                target.direct = True


def write_outputs(result: InferenceResult, targets: OutputTargets) -> set[str]:
    """Write each output that has a target into its region and empty its data; the names written."""
    written: set[str] = set()
    for tensor in result.outputs:
        target = targets.get(tensor.name)
        if target is None:
            continue
        if not target.written:  # else the worker wrote it into the region already
            target.write(tensor.name, tensor.data)
        tensor.data = b""
        written.add(tensor.name)
    return written


def release(targets: Iterable[OutputTarget | CudaOutputTarget]) -> None:
    for target in targets:
        target.release()
