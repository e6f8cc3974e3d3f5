"""An ensemble whose first step is a decoupled python model streams: each response of that step
runs through the next step (an identity) and reaches the client as it is made, over gRPC
ModelStreamInfer and HTTP generate_stream; the unary routes refuse it like a decoupled model."""

from __future__ import annotations

import json
import queue
import subprocess
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.support.models import write_python_model
from tests.support.server import RunningServer, start_server
from tests.support.triton_models import write_triton_model

pytestmark = pytest.mark.integration

ENSEMBLE = """
name: "ens"
platform: "ensemble"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
ensemble_scheduling {
  step [
    { model_name: "repeat" model_version: -1
      input_map { key: "IN" value: "IN" } output_map { key: "OUT" value: "mid" } },
    { model_name: "ident" model_version: -1
      input_map { key: "INPUT0" value: "mid" } output_map { key: "OUTPUT0" value: "OUT" } }
  ]
}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("ensemble_stream_repo")
    write_triton_model(repo, "repeat", "repeat")
    write_python_model(repo, "ident", "identity", max_batch_size=0, dims=[1], dtype="TYPE_INT32")
    (repo / "ens" / "1").mkdir(parents=True)
    (repo / "ens" / "config.pbtxt").write_text(ENSEMBLE)
    with start_server(repo, timeout=120) as running:
        yield running


def _input(value: int) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("IN", [1], "INT32")
    tensor.set_data_from_numpy(np.array([value], np.int32))
    return tensor


def test_the_ensemble_streams_each_response_of_its_decoupled_step(server: RunningServer) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        client.async_stream_infer("ens", [_input(3)], request_id="e1", enable_empty_final_response=True)
        answers = [results.get(timeout=30) for _ in range(4)]
    finally:
        client.stop_stream()
    assert [error for _, error in answers] == [None] * 4
    assert [int(result.as_numpy("OUT")[0]) for result, _ in answers[:3]] == [0, 1, 2]
    finals = [result.get_response().parameters["triton_final_response"].bool_param for result, _ in answers]
    assert finals == [False, False, False, True]
    with pytest.raises(InferenceServerException, match="decoupled transaction policy"):
        client.infer("ens", [_input(1)])


def test_generate_stream_on_the_ensemble(server: RunningServer) -> None:
    out = subprocess.run(
        [
            "curl",
            "-sN",
            "-X",
            "POST",
            f"http://{server.http_url}/v2/models/ens/generate_stream",
            "-d",
            '{"IN": 2}',
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    events = [json.loads(line[6:]) for line in out.splitlines() if line.startswith("data: ")]
    assert [event["OUT"] for event in events] == [0, 1]
