"""BLS written Triton's way: exec(), async_exec() with asyncio.gather, exec(decoupled=True) on a
decoupled model, through the target's own scheduler (counted in its statistics, batched with
outside requests) in process and thread modes; errors as responses (unknown model, unknown output,
timeout, a model calling itself, an inline instance), the worker never hung."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.support.events import wait_until
from tests.support.models import write_python_model
from tests.support.server import RunningServer, start_server
from tests.support.triton_models import write_triton_model

pytestmark = pytest.mark.integration

MODE = "TRITONCTL_INSTANCE_MODE"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("bls_repo")
    write_python_model(repo, "add_sub", "add_sub", max_batch_size=0, dims=[4])
    write_python_model(
        repo,
        "add_sub_batched",
        "add_sub",
        max_batch_size=8,
        dims=[4],
        dynamic_batching={"max_queue_delay_microseconds": 5_000_000, "preferred_batch_size": [4]},
    )
    write_python_model(repo, "slow", "slow", max_batch_size=0, dims=[4], delay_ms=2000)
    write_triton_model(repo, "repeat", "repeat")
    write_triton_model(repo, "bls", "bls", parameters={"TARGET": "add_sub"})
    write_python_model(repo, "add_sub_any", "add_sub", max_batch_size=0, dims=[-1])
    write_triton_model(repo, "bls_any", "bls", parameters={"TARGET": "add_sub_any"})
    write_triton_model(repo, "bls_thread", "bls", parameters={"TARGET": "add_sub", MODE: "thread"})
    write_triton_model(repo, "bls_inline", "bls", parameters={"TARGET": "add_sub", MODE: "inline"})
    write_triton_model(repo, "bls_async", "bls_async", parameters={"TARGET": "add_sub_batched"})
    write_triton_model(repo, "bls_stream", "bls_stream")
    write_triton_model(repo, "bls_probe", "bls_probe")
    write_triton_model(repo, "watch", "watch")
    write_triton_model(repo, "cyc_a", "bls", parameters={"TARGET": "cyc_b"})
    write_triton_model(
        repo, "cyc_b", "bls", parameters={"TARGET": "cyc_a", "TRITONCTL_INSTANCE_MODE": "thread"}
    )
    write_triton_model(repo, "bls_cancel", "bls_cancel")
    with start_server(repo, timeout=120) as running:
        yield running


def _add_sub_inputs(module: object, a: np.ndarray, b: np.ndarray) -> list[object]:
    inputs = []
    for name, data in (("INPUT0", a), ("INPUT1", b)):
        tensor = module.InferInput(name, list(data.shape), "FP32")  # type: ignore[attr-defined]
        tensor.set_data_from_numpy(data)
        inputs.append(tensor)
    return inputs


def _success(server: RunningServer, model: str) -> int:
    client = httpclient.InferenceServerClient(server.http_url)
    stats = client.get_inference_statistics(model)["model_stats"][0]
    return int(stats["inference_stats"]["success"]["count"])


@pytest.mark.parametrize("model", ["bls", "bls_thread"])
def test_exec_calls_add_sub_over_both_protocols(server: RunningServer, model: str) -> None:
    a = np.arange(4, dtype=np.float32)
    b = np.full(4, 2, np.float32)
    before = _success(server, "add_sub")
    grpc_result = grpcclient.InferenceServerClient(server.grpc_url).infer(
        model, _add_sub_inputs(grpcclient, a, b)
    )
    assert np.array_equal(grpc_result.as_numpy("OUTPUT0"), a + b)
    assert np.array_equal(grpc_result.as_numpy("OUTPUT1"), a - b)
    http_result = httpclient.InferenceServerClient(server.http_url).infer(
        model, _add_sub_inputs(httpclient, a, b)
    )
    assert np.array_equal(http_result.as_numpy("OUTPUT0"), a + b)
    assert _success(server, "add_sub") == before + 2  # the calls count in the target's statistics


def test_an_async_exec_call_is_batched_with_outside_requests(server: RunningServer) -> None:
    """The BLS call of bls_async (async def execute, async_exec) waits in add_sub_batched's queue
    with three client requests: the batcher (preferred size 4, long delay) runs the four as one."""
    client = httpclient.InferenceServerClient(server.http_url, concurrency=4)
    a = np.ones([4], np.float32)
    row = np.ones([1, 4], np.float32)
    pending = [client.async_infer("bls_async", _add_sub_inputs(httpclient, a * 5, a))]
    pending += [
        client.async_infer("add_sub_batched", _add_sub_inputs(httpclient, row * i, row)) for i in range(3)
    ]
    assert np.array_equal(pending[0].get_result().as_numpy("OUTPUT0"), a * 6)
    for i, call in enumerate(pending[1:]):
        assert np.array_equal(call.get_result().as_numpy("OUTPUT0"), row * i + row)
    stats = client.get_inference_statistics("add_sub_batched")["model_stats"][0]
    assert int(stats["inference_stats"]["success"]["count"]) == 4
    assert int(stats["execution_count"]) == 1  # one batch: the BLS call and the client requests


def test_large_tensors_cross_both_rings(server: RunningServer) -> None:
    """4 MB inputs up to the server and outputs back: both rings grow past their first 1 MiB."""
    a = np.arange(1_000_000, dtype=np.float32)
    b = np.full(1_000_000, 3, np.float32)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    result = client.infer("bls_any", _add_sub_inputs(grpcclient, a, b))
    assert np.array_equal(result.as_numpy("OUTPUT0"), a + b)
    assert np.array_equal(result.as_numpy("OUTPUT1"), a - b)


def test_a_decoupled_call_iterates_its_responses(server: RunningServer) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("IN", [1], "INT32")
    tensor.set_data_from_numpy(np.array([5], np.int32))
    result = client.infer("bls_stream", [tensor])
    assert result.as_numpy("OUT").tolist() == [0 + 1 + 2 + 3 + 4, 5]


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        (1, "no_such_model"),
        (2, "NOPE"),
        (3, "Request timeout expired"),
        (4, "BLS call cycle bls_probe -> bls_probe"),
    ],
)
def test_a_failing_call_is_an_error_response_and_the_worker_goes_on(
    server: RunningServer, mode: int, message: str
) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("IN", [1], "INT32")
    tensor.set_data_from_numpy(np.array([mode], np.int32))
    text = client.infer("bls_probe", [tensor]).as_numpy("OUT")[0].decode()
    assert message in text
    tensor.set_data_from_numpy(np.array([0], np.int32))
    assert client.infer("bls_probe", [tensor]).as_numpy("OUT")[0].decode() == "no error"


def test_cancelling_a_decoupled_call_cancels_it_in_the_callee(server: RunningServer) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("IN", [1], "INT32")
    tensor.set_data_from_numpy(np.array([1], np.int32))
    result = client.infer("bls_cancel", [tensor], request_id="bls-cancel")
    assert result.as_numpy("OUT").tolist() == [1]
    wait_until(lambda: "cancelled bls-cancel: True" in server.log, "`watch` to see its call cancelled")


def test_a_call_cycle_through_another_model_is_refused_not_hung(server: RunningServer) -> None:
    """cyc_a (one worker process) calls cyc_b (a thread instance), which calls cyc_a: its one
    instance is executing the request that waits on this call, so the call is refused."""
    a = np.arange(4, dtype=np.float32)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(Exception, match="BLS call cycle cyc_a -> cyc_b -> cyc_a"):
        client.infer("cyc_a", _add_sub_inputs(grpcclient, a, a), client_timeout=60)
    assert (
        client.infer("bls", _add_sub_inputs(grpcclient, a, a)).as_numpy("OUTPUT0").tolist()
        == (a + a).tolist()
    )


def test_an_inline_instance_gets_a_clear_refusal(server: RunningServer) -> None:
    a = np.arange(4, dtype=np.float32)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(Exception, match="inline instance"):
        client.infer("bls_inline", _add_sub_inputs(grpcclient, a, a))
    assert client.is_server_live()
