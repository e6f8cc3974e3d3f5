"""ShmWorkerChannel with real python-backend workers: batches, data types, arena growth, errors."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from server.errors import BackendError, InvalidInput
from server.workers.channel import BatchOutcome
from tests.integration.workers.pool import Workers, output, request
from tests.support.models import EXECUTE_FAILURE_MESSAGE, write_python_model

pytestmark = pytest.mark.integration


def test_batch_of_requests_each_gets_its_own_rows(workers: Workers) -> None:
    channel = workers.start(write_python_model(workers.root, "add_sub", "add_sub"))
    requests = [
        request(
            "add_sub",
            request_id=f"r{i}",
            INPUT0=np.full((i + 1, 4), i, np.float32),
            INPUT1=np.ones((i + 1, 4), np.float32),
        )
        for i in range(4)
    ]
    outcome = workers.run(channel.submit(requests))
    assert len(outcome.results) == 4
    for i, result in enumerate(outcome.results):
        assert result.id == f"r{i}"  # type: ignore[union-attr]
        np.testing.assert_array_equal(output(result, "OUTPUT0"), np.full((i + 1, 4), i + 1, np.float32))
        np.testing.assert_array_equal(output(result, "OUTPUT1"), np.full((i + 1, 4), i - 1, np.float32))
    assert outcome.compute_infer_ns > 0 and outcome.compute_input_ns > 0 and outcome.compute_output_ns > 0


def test_each_request_gets_only_the_outputs_it_asked_for(workers: Workers) -> None:
    channel = workers.start(write_python_model(workers.root, "add_sub_subset", "add_sub"))
    a, b = np.arange(3, dtype=np.float32).reshape(1, 3), np.ones((1, 3), np.float32)
    outcome = workers.run(
        channel.submit(
            [
                request("m", outputs=["OUTPUT1"], INPUT0=a, INPUT1=b),
                request("m", INPUT0=a, INPUT1=b),
                request("m", outputs=["OUTPUT0"], INPUT0=a, INPUT1=b),
            ]
        )
    )
    names = [[o.name for o in result.outputs] for result in outcome.results]  # type: ignore[union-attr]
    assert names == [["OUTPUT1"], ["OUTPUT0", "OUTPUT1"], ["OUTPUT0"]]
    np.testing.assert_array_equal(output(outcome.results[0], "OUTPUT1"), a - b)


def test_bytes_round_trip(workers: Workers) -> None:
    channel = workers.start(write_python_model(workers.root, "strings", "strings"))
    texts = [
        np.array([[b"hello", b""]], dtype=np.object_),
        np.array([["wor", "ld\x00!"], ["a", "b"]], dtype=np.object_),
    ]
    outcome = workers.run(channel.submit([request("strings", INPUT0=t) for t in texts]))
    assert output(outcome.results[0], "OUTPUT0").tolist() == [[b"HELLO", b""]]
    assert output(outcome.results[1], "OUTPUT0").tolist() == [[b"WOR", b"LD\x00!"], [b"A", b"B"]]
    assert outcome.results[0].outputs[0].datatype == "BYTES"  # type: ignore[union-attr]


@pytest.mark.parametrize("dtype", ["TYPE_FP16", "TYPE_INT64", "TYPE_BOOL", "TYPE_UINT8"])
def test_numeric_types_round_trip(workers: Workers, dtype: str) -> None:
    channel = workers.start(
        write_python_model(workers.root, f"identity_{dtype.lower()}", "identity", dtype=dtype)
    )
    numpy_type = {
        "TYPE_FP16": np.float16,
        "TYPE_INT64": np.int64,
        "TYPE_BOOL": np.bool_,
        "TYPE_UINT8": np.uint8,
    }[dtype]
    data: np.ndarray[Any, Any] = (np.arange(10) % 3).astype(numpy_type).reshape(2, 5)
    result = workers.run(channel.submit([request("m", INPUT0=data)])).results[0]
    got = output(result, "OUTPUT0")
    assert got.dtype == numpy_type
    np.testing.assert_array_equal(got, data)


def test_large_tensors_grow_both_arenas(workers: Workers) -> None:
    channel = workers.start(
        write_python_model(workers.root, "identity_big", "identity"),
        shm_default_size=64 * 1024,
        shm_growth_size=64 * 1024,
    )
    small = np.arange(8, dtype=np.float32).reshape(1, 8)
    big = np.random.default_rng(0).standard_normal((4, 300_000)).astype(np.float32)  # 4.8 MB
    for data in (small, big, small, big[:, :1000]):
        outcome = workers.run(channel.submit([request("m", INPUT0=data), request("m", INPUT0=data[:1] + 1)]))
        np.testing.assert_array_equal(output(outcome.results[0], "OUTPUT0"), data)
        np.testing.assert_array_equal(output(outcome.results[1], "OUTPUT0"), data[:1] + 1)


def test_many_concurrent_submits_stay_in_order(workers: Workers) -> None:
    channel = workers.start(write_python_model(workers.root, "identity_conc", "identity"))

    async def one(i: int) -> BatchOutcome:
        return await channel.submit([request("m", request_id=str(i), INPUT0=np.full((1, 3), i, np.float32))])

    async def many() -> list[BatchOutcome]:
        return await asyncio.gather(*(one(i) for i in range(40)))

    for i, outcome in enumerate(workers.run(many())):
        assert outcome.results[0].id == str(i)  # type: ignore[union-attr]
        np.testing.assert_array_equal(output(outcome.results[0], "OUTPUT0"), np.full((1, 3), i, np.float32))


def test_execute_raising_fails_every_request_of_the_batch_and_keeps_serving(workers: Workers) -> None:
    channel = workers.start(write_python_model(workers.root, "raises", "execute_raises"))
    ok = np.ones((1, 2), np.float32)
    for _ in range(2):
        outcome = workers.run(channel.submit([request("m", INPUT0=ok), request("m", INPUT0=ok)]))
        assert all(
            isinstance(r, BackendError) and EXECUTE_FAILURE_MESSAGE in r.message for r in outcome.results
        )
    assert channel.alive


def test_per_request_error_responses(workers: Workers) -> None:
    channel = workers.start(
        write_python_model(workers.root, "per_request", "execute_raises", mode="per_request")
    )
    good, bad = np.ones((1, 2), np.float32), -np.ones((1, 2), np.float32)
    outcome = workers.run(
        channel.submit([request("m", INPUT0=good), request("m", INPUT0=bad), request("m", INPUT0=good)])
    )
    np.testing.assert_array_equal(output(outcome.results[0], "OUTPUT0"), good)
    assert (
        isinstance(outcome.results[1], BackendError) and outcome.results[1].message == EXECUTE_FAILURE_MESSAGE
    )
    np.testing.assert_array_equal(output(outcome.results[2], "OUTPUT0"), good)


ERROR_CODE_MODEL = """
import json
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            params = json.loads(request.parameters())
            if params.get("fail"):
                error = pb_utils.TritonError("bad input " + params["fail"], pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
            else:
                data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
                out = pb_utils.Tensor("OUTPUT0", data)
                responses.append(pb_utils.InferenceResponse([out], parameters={"seen": request.request_id()}))
        return responses
"""


def test_request_parameters_and_error_codes_travel(workers: Workers) -> None:
    from tests.support.models import write_python_source

    model_dir = write_python_model(workers.root, "codes", "identity")
    write_python_source(model_dir, ERROR_CODE_MODEL)
    channel = workers.start(model_dir)
    failing = request("m", INPUT0=np.ones((1, 1), np.float32))
    failing.parameters = {"fail": "here"}
    outcome = workers.run(
        channel.submit([failing, request("m", request_id="x", INPUT0=np.ones((1, 1), np.float32))])
    )
    assert isinstance(outcome.results[0], InvalidInput) and outcome.results[0].message == "bad input here"
    assert outcome.results[1].parameters == {"seen": "x"}  # type: ignore[union-attr]


def test_control_records_too_big_for_one_message_travel_through_the_arena(workers: Workers) -> None:
    from tests.support.models import write_python_source

    model_dir = write_python_model(workers.root, "echo_ids", "identity")
    write_python_source(model_dir, ERROR_CODE_MODEL)  # answers each request with parameters {"seen": id}
    channel = workers.start(model_dir, shm_default_size=4096)
    ids = [f"{i:04d}-" + "x" * 400 for i in range(300)]  # ~120 kB of ids: above the inline limit both ways
    outcome = workers.run(
        channel.submit(
            [request("m", request_id=i, INPUT0=np.full((1, 1), n, np.float32)) for n, i in enumerate(ids)]
        )
    )
    for n, (request_id, result) in enumerate(zip(ids, outcome.results, strict=True)):
        assert result.id == request_id and result.parameters == {"seen": request_id}  # type: ignore[union-attr]
        np.testing.assert_array_equal(output(result, "OUTPUT0"), np.full((1, 1), n, np.float32))
