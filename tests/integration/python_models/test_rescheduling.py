"""Request rescheduling (python_backend README "Request Rescheduling"): python models written
Triton's way (tests/support/reschedule_models.py) that call
`request.set_release_flags(pb_utils.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE)` under
`sequence_batching { iterative_sequence: true }`, driven by the unchanged tritonclient (HTTP,
gRPC, gRPC streaming) in the process, thread and inline instance modes; Triton's errors for misuse."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.support.reschedule_models import write_reschedule_model
from tests.support.server import RunningServer, start_server

pytestmark = pytest.mark.integration

MODES = ("process", "thread", "inline")
NOT_CONFIGURED = (
    "Request is released with TRITONSERVER_REQUEST_RELEASE_RESCHEDULE, while the model is not "
    "configured to handle such a flag."
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("reschedule_repo")
    for mode in MODES:
        write_reschedule_model(repo, f"countdown_{mode}", "countdown", mode=mode)
        write_reschedule_model(repo, f"stream_{mode}", "countdown_stream", mode=mode)
    write_reschedule_model(repo, "countdown_batched", "countdown", max_batch_size=4)
    write_reschedule_model(repo, "stream_batched", "countdown_stream", max_batch_size=4)
    calls = {"COUNTDOWN": "countdown_process", "STREAM": "stream_process"}
    write_reschedule_model(repo, "bls", "bls", scheduling="", parameters=calls)
    write_reschedule_model(repo, "wrong_return", "wrong_return")
    write_reschedule_model(repo, "bad_flags", "bad_flags")
    write_reschedule_model(repo, "plain", "reschedule_once", scheduling="")
    write_reschedule_model(repo, "direct", "reschedule_once", scheduling="sequence_batching { direct { } }\n")
    dynamic = "dynamic_batching { }\n"
    write_reschedule_model(
        repo, "dynamic_stream", "reschedule_once", max_batch_size=4, decoupled=True, scheduling=dynamic
    )
    with start_server(repo, timeout=120) as running:
        yield running


def _input(module: Any, value: int, batched: bool = False) -> Any:
    shape = [1, 1] if batched else [1]
    tensor = module.InferInput("IN", shape, "INT32")
    tensor.set_data_from_numpy(np.full(shape, value, np.int32))
    return tensor


def _value(result: Any, name: str) -> Any:
    value = result.as_numpy(name).reshape(-1)[0]
    return value.decode() if isinstance(value, bytes) else int(value)


class Stream:
    """tritonclient's sync gRPC stream with its callback's results on a queue."""

    def __init__(self, server: RunningServer) -> None:
        self.client = grpcclient.InferenceServerClient(server.grpc_url)
        self.results: queue.Queue[tuple[Any, Any]] = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.results.put((result, error)))

    def take(self, count: int) -> list[tuple[Any, Any]]:
        return [self.results.get(timeout=60) for _ in range(count)]

    def close(self, cancel: bool = False) -> None:
        self.client.stop_stream(cancel_requests=cancel)
        self.client.close()


def _final(result: Any) -> bool:
    return bool(result.get_response().parameters["triton_final_response"].bool_param)


# -- non-decoupled: one answer after the reschedules ------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_rescheduled_request_is_answered_once_by_its_last_execution(
    server: RunningServer, protocol: str, mode: str
) -> None:
    module: Any = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(server.http_url if protocol == "http" else server.grpc_url)
    try:
        result = client.infer(f"countdown_{mode}", [_input(module, 4)], request_id="r4")
        assert _value(result, "OUT") == 4  # four executions of the one request
        assert _value(result, "FLAGS") == "1000"  # START on the first, none after (Triton's flags 0)
        assert _value(result, "CORRID") > 0  # an id given by the batcher: the client sent none
        assert result.get_response().id == "r4" if protocol == "grpc" else result.get_response()["id"] == "r4"
        # the client's own sequence id is the sequence's
        named = client.infer(f"countdown_{mode}", [_input(module, 2)], sequence_id=777, sequence_start=True)
        assert (_value(named, "OUT"), _value(named, "CORRID"), _value(named, "FLAGS")) == (2, 777, "10")
    finally:
        client.close()


def test_rescheduled_requests_share_batches_with_new_ones(server: RunningServer) -> None:
    """Continuous batching: every request gets its own count, and executions held several requests
    (four slots; six requests, so two wait for a slot in the backlog)."""
    stream = Stream(server)
    counts = {f"q{n}": 3 + 2 * n for n in range(6)}
    try:
        for request_id, count in counts.items():
            stream.client.async_stream_infer(
                "countdown_batched", [_input(grpcclient, count, batched=True)], request_id=request_id
            )
        answers = stream.take(len(counts))
    finally:
        stream.close()
    assert [error for _, error in answers] == [None] * len(counts)
    got = {result.get_response().id: result for result, _ in answers}
    assert {key: _value(result, "OUT") for key, result in got.items()} == counts
    assert len({_value(result, "CORRID") for result in got.values()}) == len(counts)
    assert all(_value(result, "FLAGS") == "1" + "0" * (counts[key] - 1) for key, result in got.items())
    assert max(_value(result, "MAX_BATCH") for result in got.values()) > 1


# -- decoupled: one response per execution, the final with the last ---------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_decoupled_rescheduled_request_streams_from_each_execution(
    server: RunningServer, mode: str
) -> None:
    stream = Stream(server)
    counts = {"a": 3, "b": 1, "c": 5}
    try:
        for request_id, count in counts.items():
            stream.client.async_stream_infer(
                f"stream_{mode}", [_input(grpcclient, count)], request_id=request_id
            )
        answers = stream.take(sum(counts.values()))
    finally:
        stream.close()
    assert [error for _, error in answers] == [None] * len(answers)
    seen: dict[str, list[tuple[int, bool]]] = {}
    for result, _ in answers:
        seen.setdefault(result.get_response().id, []).append((_value(result, "OUT"), _final(result)))
    for request_id, count in counts.items():
        assert seen[request_id] == [(left, left == 0) for left in range(count - 1, -1, -1)]


def test_decoupled_requests_stream_from_shared_batches(server: RunningServer) -> None:
    stream = Stream(server)
    counts = {f"s{n}": 4 + n for n in range(5)}
    try:
        for request_id, count in counts.items():
            stream.client.async_stream_infer(
                "stream_batched", [_input(grpcclient, count, batched=True)], request_id=request_id
            )
        answers = stream.take(sum(counts.values()))
    finally:
        stream.close()
    assert [error for _, error in answers] == [None] * len(answers)
    seen: dict[str, list[int]] = {}
    for result, _ in answers:
        seen.setdefault(result.get_response().id, []).append(_value(result, "OUT"))
    assert seen == {key: list(range(count - 1, -1, -1)) for key, count in counts.items()}
    assert max(_value(result, "MAX_BATCH") for result, _ in answers) > 1


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_a_cancelled_stream_ends_its_sequence_and_frees_the_slot(server: RunningServer, mode: str) -> None:
    """The model has one sequence slot: had the cancelled request kept it, the next would wait forever."""
    stream = Stream(server)
    try:
        stream.client.async_stream_infer(f"stream_{mode}", [_input(grpcclient, 10**9)], request_id="endless")
        assert all(error is None for _, error in stream.take(3))
    finally:
        stream.close(cancel=True)
    again = Stream(server)
    try:
        again.client.async_stream_infer(f"stream_{mode}", [_input(grpcclient, 2)], request_id="next")
        answers = again.take(2)
    finally:
        again.close()
    assert [(_value(result, "OUT"), error) for result, error in answers] == [(1, None), (0, None)]


def test_bls_calls_into_rescheduling_models(server: RunningServer) -> None:
    """Triton's bls_request_rescheduling: exec() and exec(decoupled=True) on iterative models."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        result = client.infer("bls", [_input(grpcclient, 3)])
    finally:
        client.close()
    assert (_value(result, "OUT"), _value(result, "COUNT")) == (3, 3)


# -- misuse: Triton's errors --------------------------------------------------------------------------


def test_a_rescheduled_request_with_a_response_fails_with_tritons_words(server: RunningServer) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        with pytest.raises(InferenceServerException) as caught:
            client.infer("wrong_return", [_input(httpclient, 1)])
    finally:
        client.close()
    assert (
        "Expected a None object in the execute function return list for reschduled request, found "
        "type '<class 'triton_python_backend_utils.InferenceResponse'>'."
    ) in str(caught.value)


@pytest.mark.parametrize("model", ["plain", "direct"])
def test_rescheduling_without_iterative_sequences_is_refused(server: RunningServer, model: str) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        with pytest.raises(
            InferenceServerException, match="TRITONSERVER_REQUEST_RELEASE_RESCHEDULE"
        ) as caught:
            client.infer(model, [_input(grpcclient, 1)], sequence_id=5, sequence_start=True)
    finally:
        client.close()
    assert NOT_CONFIGURED in str(caught.value)


def test_a_decoupled_model_without_iterative_sequences_ends_the_stream_with_the_error(
    server: RunningServer,
) -> None:
    stream = Stream(server)
    try:
        stream.client.async_stream_infer(
            "dynamic_stream", [_input(grpcclient, 7, batched=True)], request_id="d"
        )
        (first, first_error), (_, error) = stream.take(2)
    finally:
        stream.close()
    assert first_error is None and _value(first, "OUT") == 7  # sent before execute returned
    assert isinstance(error, InferenceServerException) and NOT_CONFIGURED in str(error)


def test_release_flags_other_than_all_or_reschedule_are_refused(server: RunningServer) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        assert _value(client.infer("bad_flags", [_input(httpclient, 1)]), "OUT") == 1  # RELEASE_ALL
        with pytest.raises(InferenceServerException, match="set_release_flags: flags must be"):
            client.infer("bad_flags", [_input(httpclient, 6)])
    finally:
        client.close()
