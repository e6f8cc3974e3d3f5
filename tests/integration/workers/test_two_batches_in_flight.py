"""The second arena slot in use: under a backlog, the dynamic batcher hands a real worker its second
batch while the first is still executing, and each answer comes back to its own request."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest

from server.core.scheduler.dynamic_batcher import DynamicBatcher
from server.core.stats import ModelStats
from server.repository import load_model_config
from server.vocabulary.types import InferenceRequest
from server.workers.channel import BatchOutcome, WorkerChannel
from server.workers.shm_channel import ShmWorkerChannel
from tests.integration.workers.pool import Workers, output, request
from tests.support.models import build_config, write_config, write_python_source

pytestmark = pytest.mark.integration

# execute() says it started (a byte into STARTED), then waits for a byte from GATE: the test
# decides when each batch may finish, without sleeping.
_GATED = """\
import json

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        parameters = json.loads(args["model_config"])["parameters"]
        self.gate = parameters["GATE"]["string_value"]
        self.started = parameters["STARTED"]["string_value"]

    def execute(self, requests):
        with open(self.started, "wb", buffering=0) as started:
            started.write(b"s")
        with open(self.gate, "rb", buffering=0) as gate:
            gate.read(1)
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", data)]))
        return responses
"""


class Observed(WorkerChannel):
    """Passes batches to a real channel and signals each one it is handed."""

    def __init__(self, inner: ShmWorkerChannel) -> None:
        self.inner = inner
        self.instance_name = inner.instance_name
        self.max_in_flight = inner.max_in_flight
        self.handed = 0
        self.changed = asyncio.Event()

    async def submit(self, requests: list[InferenceRequest]) -> BatchOutcome:
        self.handed += 1
        self.changed.set()
        # Runs on into inner.submit, which writes the arena slot and sends before it first yields.
        return await self.inner.submit(requests)

    async def handed_at_least(self, count: int) -> None:
        while self.handed < count:
            self.changed.clear()
            await self.changed.wait()

    @property
    def alive(self) -> bool:
        return self.inner.alive

    async def close(self) -> None:
        await self.inner.close()

    def kill(self) -> None:
        self.inner.kill()


async def read_byte(fd: int) -> bytes:
    loop = asyncio.get_running_loop()
    arrived: asyncio.Future[bytes] = loop.create_future()

    def readable() -> None:
        if not arrived.done():
            arrived.set_result(os.read(fd, 1))

    loop.add_reader(fd, readable)
    try:
        return await arrived
    finally:
        loop.remove_reader(fd)


def gated_model(root: Path, gate: Path, started: Path) -> Path:
    config = build_config(
        "gated",
        backend="python",
        inputs=[("INPUT0", 11, [4])],  # TYPE_FP32
        outputs=[("OUTPUT0", 11, [4])],
        max_batch_size=1,  # one request per batch: two requests are two batches
        dynamic_batching=True,
        parameters={"GATE": str(gate), "STARTED": str(started)},
    )
    model_dir = root / "gated"
    write_config(model_dir, config)
    return write_python_source(model_dir, _GATED)


def test_a_worker_takes_a_second_batch_while_the_first_executes(workers: Workers, tmp_path: Path) -> None:
    gate, started = tmp_path / "gate", tmp_path / "started"
    os.mkfifo(gate)
    os.mkfifo(started)
    # Read-write ends held here: the model's opens never wait for the other side.
    gate_fd = os.open(gate, os.O_RDWR)
    started_fd = os.open(started, os.O_RDWR | os.O_NONBLOCK)
    model_dir = gated_model(workers.root, gate, started)
    channel = workers.start(model_dir, max_in_flight=2)
    observed = Observed(channel)
    inputs = [np.full((1, 4), tag, np.float32) for tag in (1.0, 2.0, 3.0)]
    ids = ["first", "second", "third"]

    async def scenario() -> None:
        batcher = DynamicBatcher(load_model_config(model_dir), 1, [observed], ModelStats())
        await batcher.start()
        calls = [batcher.submit(request("gated", request_id=ids[0], INPUT0=inputs[0]))]
        assert await read_byte(started_fd) == b"s"  # batch 1 is executing, held at the gate
        # Two more: with one waiting behind it, the second batch goes into the spare slot.
        calls += [
            batcher.submit(request("gated", request_id=i, INPUT0=x))
            for i, x in zip(ids[1:], inputs[1:], strict=True)
        ]
        try:
            await asyncio.wait_for(observed.handed_at_least(2), 10)
        except TimeoutError:
            pytest.fail("the second batch was not handed to the busy instance (one slot only?)")
        assert channel.batches_in_flight == 2, "both batches' inputs are in the worker's arena slots"
        assert batcher.pool.in_flight(0) == 2 and batcher.pending == 3 and not calls[0].done()
        os.write(gate_fd, b"ggg")  # let all three finish
        results = [await call for call in calls]
        assert [result.id for result in results] == ids
        for result, sent in zip(results, inputs, strict=True):
            np.testing.assert_array_equal(output(result, "OUTPUT0"), sent)
        assert await read_byte(started_fd) == b"s"  # the worker ran batch 2 after batch 1
        await batcher.stop()

    try:
        workers.run(scenario(), timeout=60)
    finally:
        os.write(gate_fd, b"g" * 8)  # never leave the worker stuck at the gate (the fixture closes it)
        os.close(gate_fd)
        os.close(started_fd)
