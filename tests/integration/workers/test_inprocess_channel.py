"""InProcessChannel (TRITONCTL_INSTANCE_MODE inline / thread) against real backends, and against the
worker process: the same requests must get the same answers and errors in every mode."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from server.core.placement import place_instances
from server.errors import LoadError, ServerError, WorkerCrashed
from server.repository import load_model_config
from server.vocabulary.instances import KIND_GPU, InstanceSpec
from server.vocabulary.types import InferenceResult
from server.workers.backend_loading import InstanceLaunch
from server.workers.channel import BatchOutcome, WorkerChannel
from server.workers.inprocess import InProcessChannel
from server.workers.settings import WorkerOptions
from tests.integration.core.test_auto_complete import SELF_DESCRIBING
from tests.integration.workers.pool import Workers, output, request
from tests.integration.workers.test_channel_python import ERROR_CODE_MODEL
from tests.support.models import write_onnx_model, write_python_model, write_python_source

pytestmark = pytest.mark.integration

IN_PROCESS = ["inline", "thread"]


class InProcess:
    """Starts in-process instances on the workers' event loop; closes them all at the end."""

    def __init__(self, workers: Workers) -> None:
        self.workers = workers
        self.channels: list[InProcessChannel] = []

    def start(self, model_dir: Path, mode: str, **options: Any) -> InProcessChannel:
        config = load_model_config(model_dir)
        spec = place_instances(config, [])[0]
        channel = self.workers.run(
            InProcessChannel.start(
                InstanceLaunch(model_dir.name, 1, model_dir, config, spec), WorkerOptions(**options), mode
            )
        )
        self.channels.append(channel)
        return channel

    def channel(self, model_dir: Path, mode: str) -> WorkerChannel:
        return self.workers.start(model_dir) if mode == "process" else self.start(model_dir, mode)

    def close_all(self) -> None:
        async def close() -> None:
            await asyncio.gather(*(channel.close() for channel in self.channels))

        self.workers.run(close())


@pytest.fixture(scope="module")
def inprocess(workers: Workers) -> Iterator[InProcess]:
    pool = InProcess(workers)
    try:
        yield pool
    finally:
        pool.close_all()


def describe(outcome: BatchOutcome) -> list[Any]:
    """Everything a client can see of each answer."""
    seen: list[Any] = []
    for result in outcome.results:
        if isinstance(result, ServerError):
            seen.append((type(result).__name__, result.message))
        else:
            assert isinstance(result, InferenceResult)
            tensors = [(t.name, t.datatype, t.shape, bytes(t.data)) for t in result.outputs]
            seen.append((result.id, result.model, result.version, tensors, result.parameters))
    return seen


WRITES_INTO_INPUT = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        inputs = [pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy() for r in requests]
        for data in inputs:
            data *= 2  # models may write into their inputs, as into a worker's arena
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", data)]) for data in inputs]
"""


PLAIN_EXCEPTION = """
class TritonPythonModel:
    def execute(self, requests):
        raise ValueError("no such row")
"""


def _parity_cases(root: Path) -> list[tuple[Path, list[Any]]]:
    add_sub = write_python_model(root, "par_add_sub", "add_sub", max_batch_size=8)
    strings = write_python_model(root, "par_strings", "strings")
    raises = write_python_model(root, "par_raises", "execute_raises")
    per_request = write_python_model(root, "par_per_request", "execute_raises", mode="per_request")
    codes = write_python_source(write_python_model(root, "par_codes", "identity"), ERROR_CODE_MODEL)
    writes = write_python_source(write_python_model(root, "par_writes", "identity"), WRITES_INTO_INPUT)
    plain = write_python_source(write_python_model(root, "par_plain", "identity"), PLAIN_EXCEPTION)
    fp32 = [np.full((rows, 3), rows, np.float32) for rows in (1, 3, 2)]
    failing = request("m", request_id="f", INPUT0=fp32[0])
    failing.parameters = {"fail": "here", "nested": {"dropped": True}}
    return [
        (
            add_sub,
            [
                request("m", request_id="a", INPUT0=fp32[0], INPUT1=fp32[0]),
                request("m", outputs=["OUTPUT1"], request_id="b", INPUT0=fp32[1], INPUT1=fp32[1] * 2),
                request("m", outputs=["OUTPUT1", "OUTPUT0"], INPUT0=fp32[2], INPUT1=fp32[2]),
            ],
        ),
        (strings, [request("m", INPUT0=np.array([[b"ab", b""], [b"c\x00d", b"e"]], np.object_))]),
        (raises, [request("m", INPUT0=fp32[0]), request("m", INPUT0=fp32[1])]),
        (per_request, [request("m", INPUT0=fp32[0]), request("m", INPUT0=-fp32[1])]),
        (codes, [failing, request("m", request_id="x", INPUT0=fp32[1])]),
        (plain, [request("m", INPUT0=fp32[0])]),
        (writes, [request("m", INPUT0=fp32[1]), request("m", INPUT0=fp32[2])]),
    ]


def test_every_mode_answers_the_same_as_the_worker_process(workers: Workers, inprocess: InProcess) -> None:
    for model_dir, requests in _parity_cases(workers.root):
        answers = {}
        for mode in ("process", *IN_PROCESS):
            channel = inprocess.channel(model_dir, mode)
            outcome = workers.run(channel.submit(requests))
            assert outcome.compute_input_ns > 0 and outcome.compute_infer_ns > 0
            assert outcome.compute_output_ns > 0
            answers[mode] = describe(outcome)
        assert answers["inline"] == answers["process"], model_dir.name
        assert answers["thread"] == answers["process"], model_dir.name
    # and the answers are the expected ones, not just equal
    first, second = answers["process"]
    np.testing.assert_array_equal(np.frombuffer(first[3][0][3], np.float32), np.full(9, 6, np.float32))
    np.testing.assert_array_equal(np.frombuffer(second[3][0][3], np.float32), np.full(6, 4, np.float32))


@pytest.mark.parametrize("mode", IN_PROCESS)
def test_onnx_batches_rows_and_requests_of_other_shapes(
    workers: Workers, inprocess: InProcess, mode: str
) -> None:
    channel = inprocess.start(write_onnx_model(workers.root, f"onnx_{mode}", "add_sub", dims=[-1]), mode)
    rng = np.random.default_rng(2)
    shapes = [(1, 4), (3, 4), (2, 4), (1, 5)]  # the last one cannot stack: each request runs alone
    for count in (1, 3, 4):
        pairs = [
            (rng.standard_normal(s).astype(np.float32), rng.standard_normal(s).astype(np.float32))
            for s in shapes[:count]
        ]
        outcome = workers.run(channel.submit([request("m", INPUT0=a, INPUT1=b) for a, b in pairs]))
        for (a, b), result in zip(pairs, outcome.results, strict=True):
            np.testing.assert_allclose(output(result, "OUTPUT0"), a + b, rtol=1e-6)
            np.testing.assert_allclose(output(result, "OUTPUT1"), a - b, rtol=1e-6)


def test_load_failures_read_like_the_worker_process(workers: Workers, inprocess: InProcess) -> None:
    model_dir = write_python_model(workers.root, "init_fails_ip", "init_fails")
    messages = []
    for mode in ("process", *IN_PROCESS):
        with pytest.raises(LoadError) as caught:
            inprocess.channel(model_dir, mode)
        messages.append(caught.value.message)
    assert messages[0] == messages[1] == messages[2]
    assert "instance 'init_fails_ip_0_0' failed to load: RuntimeError: initialize failed" in messages[0]
    leftovers = [name for name in sys.modules if name.startswith("tritonctl_model_")]
    assert not [name for name in leftovers if "init_fails_ip" in name]


def test_gpu_instances_and_unknown_modes_are_load_errors(workers: Workers) -> None:
    model_dir = write_python_model(workers.root, "gpu_ip", "identity")
    config = load_model_config(model_dir)
    gpu = InstanceSpec("gpu_ip_0_0", KIND_GPU, 0, 0, 0)
    with pytest.raises(LoadError, match="'inline' runs instances inside the server process, on CPU only"):
        workers.run(
            InProcessChannel.start(
                InstanceLaunch("gpu_ip", 1, model_dir, config, gpu), WorkerOptions(), "inline"
            )
        )
    cpu = place_instances(config, [])[0]
    with pytest.raises(LoadError, match="TRITONCTL_INSTANCE_MODE is 'fast'"):
        workers.run(
            InProcessChannel.start(
                InstanceLaunch("gpu_ip", 1, model_dir, config, cpu), WorkerOptions(), "fast"
            )
        )


ASYNC_MODEL = """
import asyncio
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    async def execute(self, requests):
        await asyncio.sleep(0)
        inputs = [pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy() for r in requests]
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", data)]) for data in inputs]
"""


def test_async_execute_runs_on_a_thread_but_not_inline(workers: Workers, inprocess: InProcess) -> None:
    model_dir = write_python_source(write_python_model(workers.root, "async_ip", "identity"), ASYNC_MODEL)
    with pytest.raises(LoadError, match="an async execute\\(\\) cannot run inline"):
        inprocess.start(model_dir, "inline")
    channel = inprocess.start(model_dir, "thread")
    data = np.ones((1, 2), np.float32)
    np.testing.assert_array_equal(
        output(workers.run(channel.submit([request("m", INPUT0=data)])).results[0], "OUTPUT0"), data
    )


LIFECYCLE_MODEL = """
import json
import os
import threading
import time
import triton_python_backend_utils as pb_utils


RECORD = os.path.join(os.path.dirname(__file__), "threads.txt")


class TritonPythonModel:
    def initialize(self, args):
        self.threads = {"initialize": threading.get_ident()}

    def execute(self, requests):
        self.threads["execute"] = threading.get_ident()
        data = pb_utils.get_input_tensor_by_name(requests[0], "INPUT0").as_numpy()
        if data[0, 0] < 0:
            time.sleep(-float(data[0, 0]))
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", data)]) for _ in requests]

    def finalize(self):
        self.threads["finalize"] = threading.get_ident()
        with open(RECORD, "w") as file:
            file.write(json.dumps(self.threads))
"""


@pytest.mark.parametrize("mode", IN_PROCESS)
def test_load_and_finalize_run_off_the_loop_on_the_instance_thread(
    workers: Workers, inprocess: InProcess, mode: str
) -> None:
    model_dir = write_python_model(workers.root, f"life_{mode}", "identity")
    write_python_source(model_dir, LIFECYCLE_MODEL)
    record = model_dir / "1" / "threads.txt"
    channel = inprocess.start(model_dir, mode)
    workers.run(channel.submit([request("m", INPUT0=np.ones((1, 1), np.float32))]))
    workers.run(channel.close())
    threads = json.loads(record.read_text())
    assert threads["initialize"] == threads["finalize"] != threading.get_ident()
    if mode == "inline":
        assert threads["execute"] == threading.get_ident()  # the loop's thread (run_until_complete here)
    else:
        assert threads["execute"] == threads["initialize"]
    assert not channel.alive
    with pytest.raises(WorkerCrashed, match="is not running"):
        workers.run(channel.submit([request("m", INPUT0=np.ones((1, 1), np.float32))]))


def test_kill_fails_a_hanging_thread_execution_promptly(workers: Workers, inprocess: InProcess) -> None:
    model_dir = write_python_model(workers.root, "hangs_ip", "identity")
    write_python_source(model_dir, LIFECYCLE_MODEL)
    channel = inprocess.start(model_dir, "thread")

    async def kill_while_executing() -> tuple[Any, float]:
        submit = asyncio.ensure_future(channel.submit([request("m", INPUT0=np.full((1, 1), -3, np.float32))]))
        await asyncio.sleep(0.2)
        channel.kill()
        started = time.monotonic()
        outcome = (await asyncio.gather(submit, return_exceptions=True))[0]
        await channel.close()
        return outcome, time.monotonic() - started

    outcome, waited = workers.run(kill_while_executing())
    assert isinstance(outcome, WorkerCrashed) and "was abandoned" in outcome.message
    assert waited < 1.5 and not channel.alive


HELPER_MODEL = """
import helper
import triton_python_backend_utils as pb_utils
from dataclasses import dataclass


@dataclass
class Answer:  # needs its module in sys.modules while model.py runs
    value: float


class TritonPythonModel:
    def execute(self, requests):
        answer = Answer(helper.VALUE)
        inputs = [pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy() for r in requests]
        outputs = [pb_utils.Tensor("OUTPUT0", data * 0 + answer.value) for data in inputs]
        return [pb_utils.InferenceResponse([out]) for out in outputs]
"""


def test_models_with_same_named_helpers_keep_their_own(workers: Workers, inprocess: InProcess) -> None:
    channels = []
    for value in (1, 2):
        model_dir = write_python_source(
            write_python_model(workers.root, f"helper_{value}", "identity"), HELPER_MODEL
        )
        (model_dir / "1" / "helper.py").write_text(f"VALUE = {value}\n")
        channels.append(inprocess.start(model_dir, "inline"))
    assert "helper" not in sys.modules
    for value, channel in zip((1, 2), channels, strict=True):
        result = workers.run(channel.submit([request("m", INPUT0=np.zeros((1, 2), np.float32))])).results[0]
        np.testing.assert_array_equal(output(result, "OUTPUT0"), np.full((1, 2), value, np.float32))
    names = [name for name in sys.modules if name.startswith("tritonctl_model_") and "helper_" in name]
    assert len(names) == 2
    workers.run(channels[0].close())
    assert len([name for name in sys.modules if name in names]) == 1


@pytest.mark.parametrize("mode", IN_PROCESS)
def test_auto_complete_config_result_is_served(workers: Workers, inprocess: InProcess, mode: str) -> None:
    model_dir = write_python_model(workers.root, f"self_described_{mode}", "identity")
    write_python_source(model_dir, SELF_DESCRIBING)
    (model_dir / "config.pbtxt").write_text(f'name: "self_described_{mode}"\nbackend: "python"\n')
    channel = inprocess.start(model_dir, mode)
    assert channel.completed_config is not None
    assert channel.completed_config.max_batch_size == 4
    assert [tensor.name for tensor in channel.completed_config.output] == ["OUTPUT0"]
