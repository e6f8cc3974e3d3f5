"""Stateful models on the real server, driven by the unchanged tritonclient (HTTP, gRPC, gRPC stream).

Every model is an accumulator with implicit state (tests/support/sequence_models.py): a request
run in another sequence's slot, out of order, without its control tensors or from a restarted
state answers another number, so each check below fails if the batcher gets any of it wrong.
"""

from __future__ import annotations

import queue
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.support.events import wait_until
from tests.support.sequence_models import SERVER_MODELS as MODELS
from tests.support.sequence_models import expected_outputs
from tests.support.server import RunningServer

pytestmark = pytest.mark.integration


def _batched(model: str) -> bool:
    return int(MODELS[model][1].get("max_batch_size", 4)) > 0


def _input(module: Any, model: str, value: int) -> Any:
    shape = [1, 1] if _batched(model) else [1]
    tensor = module.InferInput("INPUT", shape, "INT32")
    tensor.set_data_from_numpy(np.full(shape, value, np.int32))
    return tensor


def _scalar(result: Any, name: str = "OUTPUT") -> Any:
    value = result.as_numpy(name).reshape(-1)[0]
    return value.decode() if isinstance(value, bytes) else int(value)


def run_sequence(
    server: RunningServer, protocol: str, model: str, corrid: int | str, values: list[int]
) -> list[int]:
    """Send one whole sequence (START on the first, END on the last); its OUTPUTs in order."""
    module: Any = httpclient if protocol == "http" else grpcclient
    url = server.http_url if protocol == "http" else server.grpc_url
    client = module.InferenceServerClient(url)
    answers = []
    try:
        for index, value in enumerate(values):
            result = client.infer(
                model,
                [_input(module, model, value)],
                sequence_id=corrid,
                sequence_start=index == 0,
                sequence_end=index == len(values) - 1,
            )
            assert _scalar(result, "CORRID_OUT") == corrid
            answers.append(_scalar(result))
    finally:
        client.close()
    return answers


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("model", ["onnx_direct", "onnx_oldest", "py_direct", "torch_direct"])
def test_many_concurrent_sequences_more_than_slots_each_get_their_own_sums(
    seq_server: RunningServer, protocol: str, model: str
) -> None:
    rng = random.Random(f"{model}-{protocol}")
    sequences = {
        1000 + number: [rng.randint(1, 50) for _ in range(rng.randint(2, 6))] for number in range(20)
    }
    with ThreadPoolExecutor(max_workers=len(sequences)) as pool:
        futures = {
            corrid: pool.submit(run_sequence, seq_server, protocol, model, corrid, values)
            for corrid, values in sequences.items()
        }
        for corrid, future in futures.items():
            assert future.result(timeout=120) == expected_outputs(sequences[corrid]), corrid


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_string_sequence_ids_reach_the_model_as_correlation_id_and_corrid(
    seq_server: RunningServer, protocol: str
) -> None:
    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = {
            f"user-{n}": pool.submit(run_sequence, seq_server, protocol, "py_strings", f"user-{n}", [n, 2, 3])
            for n in range(1, 7)
        }
        for corrid, future in futures.items():
            n = int(corrid.split("-")[1])
            assert future.result(timeout=60) == expected_outputs([n, 2, 3])


def test_interleaved_sequences_on_one_grpc_stream(seq_server: RunningServer) -> None:
    answers: queue.Queue[Any] = queue.Queue()
    client = grpcclient.InferenceServerClient(seq_server.grpc_url)
    client.start_stream(callback=lambda result, error: answers.put(error or result))
    sequences = {7001: [1, 2, 3, 4], 7002: [10, 20, 30], 7003: [5, 5, 5, 5, 5]}
    try:
        for step in range(5):  # all sequences' requests interleaved, none awaited
            for corrid, values in sequences.items():
                if step < len(values):
                    client.async_stream_infer(
                        "onnx_direct",
                        [_input(grpcclient, "onnx_direct", values[step])],
                        request_id=f"{corrid}:{step}",
                        sequence_id=corrid,
                        sequence_start=step == 0,
                        sequence_end=step == len(values) - 1,
                    )
        got: dict[int, dict[int, int]] = {corrid: {} for corrid in sequences}
        for _ in range(sum(len(values) for values in sequences.values())):
            result = answers.get(timeout=60)
            assert not isinstance(result, InferenceServerException), result
            corrid, step = (int(part) for part in result.get_response().id.split(":"))
            got[corrid][step] = _scalar(result)
    finally:
        client.stop_stream()
        client.close()
    for corrid, values in sequences.items():
        assert [got[corrid][step] for step in range(len(values))] == expected_outputs(values)


def test_a_sequence_model_refuses_requests_without_a_sequence_id(seq_server: RunningServer) -> None:
    client = httpclient.InferenceServerClient(seq_server.http_url)
    with pytest.raises(InferenceServerException, match="must specify a non-zero or non-empty correlation ID"):
        client.infer("onnx_direct", [_input(httpclient, "onnx_direct", 1)])
    with pytest.raises(InferenceServerException, match="must specify the START flag on the first request"):
        client.infer("onnx_direct", [_input(httpclient, "onnx_direct", 1)], sequence_id=424242)
    assert "sequence" in client.get_server_metadata()["extensions"]


def test_an_idle_sequence_is_released_and_a_start_restarts_a_live_one(seq_server: RunningServer) -> None:
    client = grpcclient.InferenceServerClient(seq_server.grpc_url)

    def send(corrid: int, value: int, **flags: bool) -> int:
        return int(
            _scalar(
                client.infer(
                    "onnx_idle", [_input(grpcclient, "onnx_idle", value)], sequence_id=corrid, **flags
                )
            )
        )

    assert send(31, 4, sequence_start=True) == 1004
    assert send(31, 6, sequence_start=True) == 1006  # START on a live sequence: state starts again
    assert send(31, 1) == 7
    # The one slot is held by 31; 32 waits in the backlog until 31 is idle for 0.3 s and released.
    assert send(32, 2, sequence_start=True) == 1002
    with pytest.raises(InferenceServerException, match="must specify the START flag"):
        send(31, 1)
    assert send(32, 3, sequence_end=True) == 10005


def test_a_worker_killed_mid_sequence_ends_its_sequences_with_a_clear_error(
    seq_server: RunningServer,
) -> None:
    client = grpcclient.InferenceServerClient(seq_server.grpc_url)

    def send(corrid: int, value: int, **flags: bool) -> int:
        return int(
            _scalar(
                client.infer("py_crash", [_input(grpcclient, "py_crash", value)], sequence_id=corrid, **flags)
            )
        )

    assert send(51, 5, sequence_start=True) == 1005
    assert send(51, 5) == 10
    assert send(52, 1, sequence_start=True) == 1001  # the worker's other slot
    with pytest.raises(InferenceServerException, match=r"crash|killed|exited"):
        send(52, -1)  # kills the worker holding both sequences' state
    wait_until(lambda: client.is_model_ready("py_crash"), timeout=60, what="py_crash restarted")
    for corrid in (51, 52):  # neither silently starts again from zero
        with pytest.raises(InferenceServerException, match=r"was ended.*state is lost"):
            send(corrid, 5)
    assert send(51, 5, sequence_start=True) == 1005  # a new START begins it again, from zero
    assert send(51, 2, sequence_end=True) == 10007


def test_sequence_requests_count_in_statistics(seq_server: RunningServer) -> None:
    before = _success(seq_server, "onnx_oldest")
    run_sequence(seq_server, "http", "onnx_oldest", 999_001, [1, 2, 3])
    assert _success(seq_server, "onnx_oldest") == before + 3


def _success(server: RunningServer, model: str) -> int:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    return int(client.get_inference_statistics(model).model_stats[0].inference_stats.success.count)
