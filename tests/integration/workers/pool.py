"""Real worker processes for the channel tests: one event loop and one set of workers per module,
plus helpers to build requests and read outputs."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from server.core.placement import place_instances
from server.repository import load_model_config
from server.vocabulary.dtypes import WIRE_TO_NUMPY, deserialize_bytes, numpy_to_wire, serialize_bytes
from server.vocabulary.types import InferenceRequest, InferenceResult, RequestedOutput, Tensor
from server.workers.backend_loading import InstanceLaunch
from server.workers.settings import WorkerOptions
from server.workers.shm_channel import ShmWorkerChannel
from server.workers.supervisor import start_worker

T = TypeVar("T")


class Workers:
    """Starts real workers on one event loop and closes every one of them at the end."""

    def __init__(self, loop: asyncio.AbstractEventLoop, root: Path) -> None:
        self.loop = loop
        self.root = root
        self.channels: list[ShmWorkerChannel] = []

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(coroutine, timeout))

    def start(self, model_dir: Path, **options: Any) -> ShmWorkerChannel:
        config = load_model_config(model_dir)
        spec = place_instances(config, [])[0]
        channel = self.run(
            start_worker(InstanceLaunch(model_dir.name, 1, model_dir, config, spec), WorkerOptions(**options))
        )
        self.channels.append(channel)
        return channel

    def close_all(self) -> None:
        async def close() -> None:
            await asyncio.gather(*(channel.close() for channel in self.channels))

        self.run(close())


def tensor(name: str, array: Any, datatype: str | None = None) -> Tensor:
    array = np.asarray(array)
    wire = datatype or numpy_to_wire(array.dtype)
    data = serialize_bytes(array) if wire == "BYTES" else np.ascontiguousarray(array).tobytes()
    return Tensor(name, wire, list(array.shape), data)


def request(
    model: str, outputs: list[str] | None = None, request_id: str = "", **inputs: Any
) -> InferenceRequest:
    return InferenceRequest(
        model=model,
        version="",
        inputs=[
            value if isinstance(value, Tensor) else tensor(name, value) for name, value in inputs.items()
        ],
        outputs=[RequestedOutput(name) for name in outputs or []],
        id=request_id,
    )


def request_from(model: str, inputs: dict[str, Any], outputs: list[str] | None = None) -> InferenceRequest:
    """`request` for input names that are not Python identifiers or come from a variable."""
    return request(model, outputs, "", **inputs)


def output(result: Any, name: str) -> np.ndarray[Any, Any]:
    assert isinstance(result, InferenceResult), result
    for item in result.outputs:
        if item.name == name:
            if item.datatype == "BYTES":
                return deserialize_bytes(bytes(item.data)).reshape(item.shape)
            return np.frombuffer(item.data, dtype=WIRE_TO_NUMPY[item.datatype]).reshape(item.shape)
    raise AssertionError(f"no output {name} in {[o.name for o in result.outputs]}")
