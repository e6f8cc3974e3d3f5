"""An unloaded model's objects go when their last reference does, not at the next full collection.

With models loaded and evicted on demand dozens of times a second, each closed instance that was a
reference cycle (channel <-> side link, scheduler -> pool -> supervisor -> state callback ->
scheduler, side link <-> cancel hooks) waited for the cycle collector: its sockets and arenas
stayed open until then, and the collections that freed them paused the event loop 100-300 ms.
"""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import numpy as np

from server.core.dataplane import DataPlane
from server.core.registry import ModelRegistry
from server.vocabulary.types import InferenceRequest, Tensor
from server.workers.settings import WorkerOptions
from tests.support.models import write_python_model


def _server_garbage() -> list[str]:
    """Our own objects that only the cycle collector would free (kept aside to be named, then freed)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return sorted({type(o).__qualname__ for o in gc.garbage if type(o).__module__.startswith("server.")})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.collect()


def test_an_unloaded_model_leaves_no_reference_cycles(tmp_path: Path) -> None:
    write_python_model(tmp_path, "m", "identity", instance_count=2)

    async def run() -> list[str]:
        models = ModelRegistry([tmp_path], worker_options=WorkerOptions(), visible_gpus=[])
        dataplane = DataPlane(models)
        try:
            await models.load("m")
            data = np.arange(4, dtype=np.float32).tobytes()
            for _ in range(4):  # requests take cancel slots and hooks on the side link
                request = InferenceRequest("m", "", [Tensor("INPUT0", "FP32", [1, 4], data)])
                result = await dataplane.infer(request)
                assert result.outputs[0].data == data
            _server_garbage()  # what start-up and the requests left: not this test's question
            await models.unload("m")
            return _server_garbage()
        finally:
            await models.close()

    assert asyncio.run(run()) == []
