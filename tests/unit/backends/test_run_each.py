"""run_each: the per-request fallback the batching backends share when a batch cannot run as one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from server.backends.base import (
    BackendContext,
    Batch,
    BatchInput,
    NDArray,
    OutputArray,
    Request,
    RequestInput,
    RequestOutputs,
    run_each,
)
from server.errors import BackendError, InvalidInput, ServerError


def request(request_id: str) -> Request:
    return Request(id=request_id, inputs={}, requested_outputs=["OUTPUT0"])


def test_each_request_gets_its_own_answer_or_error_in_order() -> None:
    refused = InvalidInput("bad input")
    ran: list[str] = []

    def run_one(req: Request) -> RequestOutputs:
        ran.append(req.id)
        if req.id == "server-error":
            raise refused
        if req.id == "framework-error":
            raise ValueError("shape mismatch")
        return {"OUTPUT0": OutputArray(np.array([int(req.id)]))}

    ids = ["1", "server-error", "2", "framework-error", "3"]
    results = run_each([request(i) for i in ids], run_one, "framework failed")

    assert ran == ids  # a failure does not stop the requests after it
    assert len(results) == len(ids)
    for index in (0, 2, 4):
        answer = results[index]
        assert isinstance(answer, dict)
        assert answer["OUTPUT0"].array.tolist() == [int(ids[index])]
    assert results[1] is refused  # a ServerError is passed on as it is, not wrapped
    wrapped = results[3]
    assert type(wrapped) is BackendError
    assert wrapped.message == "framework failed: shape mismatch"


def test_no_requests_no_answers() -> None:
    assert run_each([], lambda req: {}, "unused") == []


def test_interrupts_are_not_turned_into_answers() -> None:
    def run_one(req: Request) -> RequestOutputs:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_each([request("1")], run_one, "framework failed")


def _input(values: NDArray) -> RequestInput:
    wire = {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64"}[values.dtype]
    return RequestInput("INPUT0", wire, list(values.shape), memoryview(values.tobytes()))


def test_onnxruntime_runs_requests_of_different_shapes_one_by_one(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from server.backends.onnxruntime import OnnxRuntimeBackend
    from server.repository import load_model_config
    from tests.support.models import write_onnx_model

    model_dir = write_onnx_model(tmp_path, "identity", "identity", dims=[-1])
    context = BackendContext(
        model_name="identity",
        version=1,
        model_dir=model_dir,
        config=load_model_config(model_dir),
        instance_name="identity_0",
        instance_kind="KIND_CPU",
        device_id=None,
        backend_parameters={},
    )
    backend = OnnxRuntimeBackend(context)
    backend.load()
    # Rows of 2 and 3 columns cannot stack into one batch; the FP64 one is refused by onnxruntime.
    arrays: list[NDArray] = [
        np.ones((1, 2), np.float32),
        np.zeros((1, 3), np.float64),
        np.full((1, 3), 7, np.float32),
    ]
    requests = [
        Request(id=str(i), inputs={"INPUT0": _input(a)}, requested_outputs=["OUTPUT0"])
        for i, a in enumerate(arrays)
    ]
    batch_input = BatchInput(
        "INPUT0", "FP32", [list(a.shape) for a in arrays], memoryview(b"".join(a.tobytes() for a in arrays))
    )
    results = backend.execute(Batch(requests, {"INPUT0": batch_input}))

    first, failed, last = results
    assert isinstance(first, dict) and np.array_equal(first["OUTPUT0"].array, arrays[0])
    assert isinstance(last, dict) and np.array_equal(last["OUTPUT0"].array, arrays[2])
    assert isinstance(failed, ServerError) and type(failed) is BackendError
    assert failed.message.startswith("onnxruntime failed: ")
