"""A served request leaves nothing for the cycle collector: refcounting frees it when it ends.

A request and its control (cancellation, response senders) pointed at each other, so every request
an instance served was a reference cycle: ~3 objects per request waited for a young collection, and
in a host serving 2,000 models those collections added up to ~1 s a minute of paused instances.
The in-process instance modes build the same control as the worker process (workers/worker_side.py),
so they show it here, in the test's own process.
"""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import numpy as np
import pytest

from server.backends.base import Request, RequestInput
from server.core.dataplane import DataPlane
from server.core.registry import ModelRegistry
from server.repository.instance_mode import INSTANCE_MODE_KEY
from server.vocabulary.stream import ResponseStream
from server.vocabulary.types import InferenceRequest, Tensor
from server.workers.settings import WorkerOptions
from server.workers.worker_side import WorkerSide
from tests.support.models import write_python_model
from tests.support.triton_models import write_triton_model


def _garbage_of_requests() -> list[str]:
    """Type names of the cyclic garbage: request-side objects only the collector would free."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        names = {type(o).__qualname__ for o in gc.garbage}
        return sorted(names & {"Request", "RequestInput", "InProcessControl", "WorkerControl"})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.collect()


@pytest.mark.parametrize("mode", ["inline", "thread"])
def test_requests_to_an_ordinary_and_a_decoupled_model_leave_no_cycles(tmp_path: Path, mode: str) -> None:
    write_python_model(tmp_path, "plain", "identity", dims=[4], parameters={INSTANCE_MODE_KEY: mode})
    write_triton_model(tmp_path, "stream", "repeat_now", parameters={INSTANCE_MODE_KEY: mode})

    async def run() -> tuple[list[str], list[str]]:
        models = ModelRegistry([tmp_path], worker_options=WorkerOptions(), visible_gpus=[])
        dataplane = DataPlane(models)
        try:
            await models.load("plain")
            await models.load("stream")
            gc.disable()  # what follows must be freed by refcounting alone
            _garbage_of_requests()  # what loading left: not this test's question
            data = np.arange(4, dtype=np.float32).tobytes()
            for _ in range(5):
                request = InferenceRequest("plain", "", [Tensor("INPUT0", "FP32", [1, 4], data)])
                result = await dataplane.infer(request)
                assert result.outputs[0].data == data
            del request, result
            plain = _garbage_of_requests()

            for _ in range(3):
                stream = ResponseStream()
                three = np.array([3], dtype=np.int32).tobytes()
                streamed = InferenceRequest("stream", "", [Tensor("IN", "INT32", [1], three)], stream=stream)
                dataplane.submit_stream(streamed, stream)
                seen = [item async for item in stream]
                assert seen[-1][1] is True and len([r for r, _ in seen if r is not None]) == 3
            del streamed, stream, seen
            return plain, _garbage_of_requests()
        finally:
            gc.enable()
            await models.close()

    plain, streamed = asyncio.run(run())
    assert plain == []
    assert streamed == []


class _SideStandIn:
    """What WorkerControl uses of the worker's side channel: the board and the response sender."""

    board = bytearray(4)

    def __init__(self) -> None:
        self.sent: list[bool] = []

    def send_response(self, slot: int, request: Request, outputs: object, final: bool) -> None:
        self.sent.append(final)


def test_a_worker_processs_request_control_leaves_no_cycle() -> None:
    side = _SideStandIn()
    gc.disable()
    try:
        _garbage_of_requests()
        for raw in ({"k": 0}, {"k": 1, "s": 1}):
            request = Request("r", {"IN": RequestInput("IN", "FP32", [1], memoryview(b"\0" * 4))}, ["OUT"])
            control = WorkerSide.control(side, raw, request)  # type: ignore[arg-type]
            assert request.control is control
            control.send(None, True)
            del request, control
        assert _garbage_of_requests() == []
    finally:
        gc.enable()
    assert side.sent == [True]  # the streamed one went out through the side channel
