"""Decoupled python models written Triton's way, through the real server and tritonclient's
streaming APIs (sync start_stream/async_stream_infer and grpc.aio stream_infer), in the process,
thread and inline instance modes; response senders in default mode; Triton's errors for misuse."""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.support.events import wait_until
from tests.support.server import RunningServer, start_server
from tests.support.triton_models import write_triton_model

pytestmark = pytest.mark.integration

MODE = "TRITONCTL_INSTANCE_MODE"
MODES = ("process", "thread", "inline")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("decoupled_repo")
    for mode in MODES:
        write_triton_model(repo, f"repeat_{mode}", "repeat", parameters={MODE: mode})
        write_triton_model(repo, f"repeat_now_{mode}", "repeat_now", parameters={MODE: mode})
        write_triton_model(repo, f"sender_{mode}", "sender", parameters={MODE: mode})
    write_triton_model(repo, "misuse", "misuse")
    write_triton_model(repo, "big", "big")
    with start_server(repo, timeout=120) as running:
        yield running


def _int_input(name: str, value: int) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, [1], "INT32")
    tensor.set_data_from_numpy(np.array([value], np.int32))
    return tensor


class Stream:
    """tritonclient's sync stream with its callback's results on a queue."""

    def __init__(self, server: RunningServer) -> None:
        self.client = grpcclient.InferenceServerClient(server.grpc_url)
        self.results: queue.Queue[tuple[Any, Any]] = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.results.put((result, error)))

    def take(self, count: int) -> list[tuple[Any, Any]]:
        return [self.results.get(timeout=30) for _ in range(count)]

    def close(self) -> None:
        self.client.stop_stream()
        self.client.close()


def _final(result: Any) -> bool:
    return bool(result.get_response().parameters["triton_final_response"].bool_param)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["repeat", "repeat_now"])
def test_a_decoupled_model_streams_each_response(server: RunningServer, kind: str, mode: str) -> None:
    stream = Stream(server)
    try:
        stream.client.async_stream_infer(f"{kind}_{mode}", [_int_input("IN", 4)], request_id="r1")
        answers = stream.take(4)
        assert [error for _, error in answers] == [None] * 4
        assert [int(result.as_numpy("OUT")[0]) for result, _ in answers] == [0, 1, 2, 3]
        assert [result.get_response().id for result, _ in answers] == ["r1"] * 4
        # repeat ends with a flags-only final (not sent: no empty final asked), repeat_now marks its last
        assert [_final(result) for result, _ in answers] == [False, False, False, kind == "repeat_now"]
    finally:
        stream.close()


@pytest.mark.parametrize("mode", MODES)
def test_zero_responses_and_the_empty_final_response(server: RunningServer, mode: str) -> None:
    stream = Stream(server)
    try:
        stream.client.async_stream_infer(
            f"repeat_{mode}", [_int_input("IN", 0)], request_id="none", enable_empty_final_response=True
        )
        stream.client.async_stream_infer(
            f"repeat_{mode}", [_int_input("IN", 2)], request_id="two", enable_empty_final_response=True
        )
        answers = stream.take(4)
        assert all(error is None for _, error in answers)
        by_id: dict[str, list[Any]] = {}
        for result, _ in answers:
            by_id.setdefault(result.get_response().id, []).append(result)
        assert [_final(r) for r in by_id["none"]] == [True]
        assert by_id["none"][0].get_response().outputs == []
        assert [_final(r) for r in by_id["two"]] == [False, False, True]
    finally:
        stream.close()


def test_responses_from_a_thread_arrive_as_they_are_sent(server: RunningServer) -> None:
    """The first response reaches the client while the model still holds the later ones."""
    stream = Stream(server)
    try:
        inputs = [_int_input("IN", 3), _int_input("DELAY_MS", 300)]
        stream.client.async_stream_infer("repeat_process", inputs, request_id="slow")
        result, error = stream.results.get(timeout=30)
        assert error is None and int(result.as_numpy("OUT")[0]) == 0
        assert stream.results.empty()  # the others are 300 ms apart
        assert [int(r.as_numpy("OUT")[0]) for r, _ in stream.take(2)] == [1, 2]
    finally:
        stream.close()


def test_many_requests_on_one_stream_and_on_the_aio_client(server: RunningServer) -> None:
    async def run() -> dict[str, list[int]]:
        client = grpcaio.InferenceServerClient(server.grpc_url)

        async def requests() -> Any:
            for index in range(8):
                inputs = [grpcaio.InferInput("IN", [1], "INT32")]
                inputs[0].set_data_from_numpy(np.array([index % 4 + 1], np.int32))
                yield {"model_name": "repeat_process", "inputs": inputs, "request_id": f"q{index}"}

        seen: dict[str, list[int]] = {}
        expected = sum(index % 4 + 1 for index in range(8))
        async for result, error in client.stream_infer(requests()):
            assert error is None
            seen.setdefault(result.get_response().id, []).append(int(result.as_numpy("OUT")[0]))
            if sum(len(v) for v in seen.values()) == expected:
                break
        await client.close()
        return seen

    seen = asyncio.run(run())
    assert seen == {f"q{index}": list(range(index % 4 + 1)) for index in range(8)}


@pytest.mark.parametrize("mode", MODES)
def test_a_response_sender_in_default_mode_answers_unary_calls(server: RunningServer, mode: str) -> None:
    data = np.arange(5, dtype=np.float32)
    grpc_client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("IN", [5], "FP32")
    tensor.set_data_from_numpy(data)
    assert np.array_equal(grpc_client.infer(f"sender_{mode}", [tensor]).as_numpy("OUT"), data)
    http_client = httpclient.InferenceServerClient(server.http_url)
    http_tensor = httpclient.InferInput("IN", [5], "FP32")
    http_tensor.set_data_from_numpy(data)
    assert np.array_equal(http_client.infer(f"sender_{mode}", [http_tensor]).as_numpy("OUT"), data)


def test_unary_routes_refuse_a_decoupled_model_with_tritons_errors(server: RunningServer) -> None:
    grpc_client = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException) as grpc_error:
        grpc_client.infer("repeat_process", [_int_input("IN", 1)])
    assert grpc_error.value.status() == "StatusCode.UNIMPLEMENTED"
    assert "ModelInfer RPC doesn't support models with decoupled transaction policy" in str(grpc_error.value)
    http_client = httpclient.InferenceServerClient(server.http_url)
    tensor = httpclient.InferInput("IN", [1], "INT32")
    tensor.set_data_from_numpy(np.array([1], np.int32))
    with pytest.raises(InferenceServerException) as http_error:
        http_client.infer("repeat_process", [tensor])
    assert "HTTP end point doesn't support models with decoupled transaction policy" in str(http_error.value)
    assert http_error.value.status() == "501"


def test_sender_misuse_gives_tritons_errors_and_the_model_keeps_serving(server: RunningServer) -> None:
    stream = Stream(server)
    try:
        stream.client.async_stream_infer("misuse", [_int_input("IN", 1)], request_id="after-final")
        stream.client.async_stream_infer("misuse", [_int_input("IN", 2)], request_id="second-final")
        stream.client.async_stream_infer("misuse", [_int_input("IN", 3)], request_id="returns-list")
        _, error = stream.results.get(timeout=30)  # the two finals are flags-only: nothing is written
        assert error is not None
        assert "is using the decoupled mode and the execute function must return None" in str(error)
        stream.client.async_stream_infer("misuse", [_int_input("IN", 0)], request_id="report")
        result, error = stream.results.get(timeout=30)
        assert error is None
        texts = [item.decode() for item in result.as_numpy("OUT")]
        assert texts == ["Unable to send response. Response sender has been closed."] * 2
    finally:
        stream.close()


def test_large_streamed_responses_grow_the_ring_and_arrive_whole(server: RunningServer) -> None:
    stream = Stream(server)
    try:
        stream.client.async_stream_infer("big", [_int_input("IN", 3)], request_id="big")
        answers = stream.take(3)
    finally:
        stream.close()
    assert [error for _, error in answers] == [None] * 3
    for i, (result, _) in enumerate(answers):
        data = result.as_numpy("OUT")
        assert data.shape == (600_000 * (i + 1),) and float(data.min()) == float(data.max()) == i


def test_a_worker_dying_mid_stream_ends_the_stream_with_the_reason(server: RunningServer) -> None:
    stream = Stream(server)
    try:
        stream.client.async_stream_infer("repeat_now_process", [_int_input("IN", -100)], request_id="dies")
        (first, error), (_, crashed) = stream.take(2)
    finally:
        stream.close()
    assert error is None and int(first.as_numpy("OUT")[0]) == 0
    assert crashed is not None and "exited with code 3" in str(crashed)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    wait_until(lambda: client.is_model_ready("repeat_now_process"), "the instance to be restarted")
    again = Stream(server)
    try:
        again.client.async_stream_infer("repeat_now_process", [_int_input("IN", 1)], request_id="after")
        assert [int(r.as_numpy("OUT")[0]) for r, _ in again.take(1)] == [0]
    finally:
        again.close()
