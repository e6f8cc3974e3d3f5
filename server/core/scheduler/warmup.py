"""Model warmup: the config's `model_warmup` requests, run on every instance before the model is READY.

Triton's rules (model_config.proto `ModelWarmup`): each entry has `batch_size` (requests executed
together, each with a batch dimension of 1 when the model batches), `count` runs (at least one), and
per input a `data_type`, `dims` without the batch dimension, and one source of data: `zero_data`,
`random_data`, or `input_data_file` (raw bytes from `<model dir>/warmup/<file>`; BYTES elements
length-prefixed). Instances warm up in parallel; a failure fails the load with the model's message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from server.errors import LoadError, ServerError
from server.vocabulary.dtypes import ELEMENT_SIZE, WIRE_TO_NUMPY, config_to_wire, element_count
from server.vocabulary.types import InferenceRequest, Tensor

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2

    from server.workers.channel import WorkerChannel

WARMUP_FOLDER = "warmup"


def build_warmup_requests(
    config: model_config_pb2.ModelConfig, model_dir: Path | None = None
) -> list[tuple[str, int, list[InferenceRequest]]]:
    """(warmup name, count, the batch of requests) for each `model_warmup` entry."""
    from tritonclient.grpc import model_config_pb2

    batches: list[tuple[str, int, list[InferenceRequest]]] = []
    if not config.model_warmup:
        return batches  # (default_rng seeds from the OS: ~0.2 ms a load on demand)
    rng = np.random.default_rng()
    for warmup in config.model_warmup:
        batch_size = max(1, warmup.batch_size)
        tensors: list[Tensor] = []
        for name, spec in sorted(warmup.inputs.items()):
            if any(dim < 0 for dim in spec.dims):
                raise LoadError(f"warmup setting '{warmup.name}': input '{name}' has a variable dimension")
            datatype = config_to_wire(model_config_pb2.DataType.Name(spec.data_type))
            shape = ([1] if config.max_batch_size > 0 else []) + [int(dim) for dim in spec.dims]
            label = f"warmup setting '{warmup.name}': input '{name}'"
            data = _warmup_data(spec, datatype, shape, label=label, model_dir=model_dir, rng=rng)
            tensors.append(Tensor(name, datatype, shape, data))
        requests = [
            InferenceRequest(
                model=config.name,
                version="",
                inputs=[Tensor(t.name, t.datatype, list(t.shape), t.data) for t in tensors],
                id=f"warmup:{warmup.name}",
            )
            for _ in range(batch_size)
        ]
        batches.append((warmup.name, max(1, warmup.count), requests))
    return batches


def _warmup_data(
    spec: model_config_pb2.ModelWarmup.Input,
    datatype: str,
    shape: list[int],
    *,
    label: str,
    model_dir: Path | None,
    rng: np.random.Generator,
) -> bytes:
    count = element_count(shape)
    source = spec.WhichOneof("input_data_type")
    if source == "input_data_file":
        if model_dir is None:
            raise LoadError(f"{label}: no model folder to read '{spec.input_data_file}' from")
        path = model_dir / WARMUP_FOLDER / str(spec.input_data_file)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise LoadError(f"{label}: cannot read {path}: {error}") from error
        if datatype == "BYTES":
            return data
        expected = count * ELEMENT_SIZE[datatype]
        if len(data) < expected:
            raise LoadError(f"{label}: {path} holds {len(data)} bytes, {expected} are needed")
        return data[:expected]
    if datatype == "BYTES":
        return b"\x00\x00\x00\x00" * count  # every element an empty string
    if source == "random_data":
        dtype = WIRE_TO_NUMPY[datatype]
        if datatype == "BOOL":
            values = rng.integers(0, 2, size=count).astype(np.bool_)
        elif dtype.kind == "f":
            values = rng.random(count).astype(dtype)
        else:
            values = rng.integers(0, 100, size=count).astype(dtype)
        return bytes(values.tobytes())
    return bytes(count * ELEMENT_SIZE[datatype])  # zero_data (also when no source is set)


async def run_warmup(
    config: model_config_pb2.ModelConfig,
    channels: Sequence[WorkerChannel],
    model_dir: Path | None = None,
) -> None:
    """Execute every warmup entry `count` times on each instance; raises LoadError if any fails."""
    batches = build_warmup_requests(config, model_dir)
    if not batches:
        return

    async def warm(channel: WorkerChannel) -> None:
        for name, count, requests in batches:
            for _ in range(count):
                try:
                    outcome = await channel.submit(requests)
                except ServerError as error:
                    raise LoadError(f"warmup setting '{name}' failed: {error.message}") from error
                for result in outcome.results:
                    if isinstance(result, ServerError):
                        raise LoadError(f"warmup setting '{name}' failed: {result.message}")

    await asyncio.gather(*(warm(channel) for channel in channels))
