"""Classification with `label_filename` ("value:index:label", as Triton 2.51 answers) and raw binary
requests (`Inference-Header-Content-Length: 0`, the whole body is the only input), driven with
unchanged tritonclient (HTTP, gRPC, aio) and raw HTTP. Expected answers are the real Triton's,
measured on the same models (the pytriton-bundled tritonserver 2.51)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient

from server.repository import check_model_config, load_model_config
from tests.support.models import write_python_model
from tests.support.server import RunningServer, start_server

LABELS = "cat\ndog\nbird\nfish\n"
SCORES = np.array([0.1, 0.9, 0.5, 0.2], dtype=np.float32)


def _with_labels(model_dir: Path, filename: str = "labels.txt") -> None:
    config = model_dir / "config.pbtxt"
    text = config.read_text().replace(
        'name: "OUTPUT0"', f'name: "OUTPUT0"\n  label_filename: "{filename}"', 1
    )
    config.write_text(text)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("labels-repo")
    labelled = write_python_model(repo, "labelled", "identity", max_batch_size=0, dims=[4])
    _with_labels(labelled)
    (labelled / "labels.txt").write_text(LABELS)
    batched = write_python_model(repo, "batched", "identity", max_batch_size=8, dims=[4])
    _with_labels(batched)
    (batched / "labels.txt").write_text("a\nb\n")  # fewer labels than classes: the rest stay unlabelled
    write_python_model(repo, "variable", "identity", max_batch_size=0, dims=[-1])
    write_python_model(repo, "words", "strings", max_batch_size=0, dims=[1])
    write_python_model(repo, "two_inputs", "add_sub", max_batch_size=0, dims=[4])
    with start_server(repo) as running:
        yield running


def test_http_classification_with_labels(server: RunningServer) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    tensor = httpclient.InferInput("INPUT0", [4], "FP32")
    tensor.set_data_from_numpy(SCORES)
    result = client.infer(
        "labelled", [tensor], outputs=[httpclient.InferRequestedOutput("OUTPUT0", class_count=3)]
    )
    assert list(result.as_numpy("OUTPUT0")) == [b"0.900000:1:dog", b"0.500000:2:bird", b"0.200000:3:fish"]
    as_json = client.infer(
        "labelled",
        [tensor],
        outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=False, class_count=1)],
    )
    assert as_json.get_response()["outputs"][0]["data"] == ["0.900000:1:dog"]


def test_grpc_and_aio_classification_with_labels(server: RunningServer) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("INPUT0", [4], "FP32")
    tensor.set_data_from_numpy(SCORES)
    result = client.infer(
        "labelled", [tensor], outputs=[grpcclient.InferRequestedOutput("OUTPUT0", class_count=2)]
    )
    assert list(result.as_numpy("OUTPUT0")) == [b"0.900000:1:dog", b"0.500000:2:bird"]

    async def aio() -> list[bytes]:
        aio_client = grpcaio.InferenceServerClient(server.grpc_url)
        try:
            answer = await aio_client.infer(
                "labelled", [tensor], outputs=[grpcaio.InferRequestedOutput("OUTPUT0", class_count=1)]
            )
            return list(answer.as_numpy("OUTPUT0"))
        finally:
            await aio_client.close()

    assert asyncio.run(aio()) == [b"0.900000:1:dog"]


def test_batched_rows_and_classes_beyond_the_label_file(server: RunningServer) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    rows = np.array([[0.0, 3.0, 2.0, 1.0], [5.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    tensor = httpclient.InferInput("INPUT0", [2, 4], "FP32")
    tensor.set_data_from_numpy(rows)
    result = client.infer(
        "batched", [tensor], outputs=[httpclient.InferRequestedOutput("OUTPUT0", class_count=2)]
    )
    assert result.as_numpy("OUTPUT0").tolist() == [
        [b"3.000000:1:b", b"2.000000:2"],
        [b"5.000000:0:a", b"0.000000:1:b"],
    ]


def _post_raw(server: RunningServer, model: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        f"http://{server.http_url}/v2/models/{model}/infer",
        data=body,
        method="POST",
        headers={"Inference-Header-Content-Length": "0", "Content-Type": "application/octet-stream"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def _split(headers: dict[str, str], body: bytes) -> tuple[dict[str, object], bytes]:
    length = int(headers["Inference-Header-Content-Length"])
    return json.loads(body[:length]), body[length:]


def test_raw_binary_request(server: RunningServer) -> None:
    data = np.array([1, 2, 3, 4], dtype=np.float32).tobytes()
    status, headers, body = _post_raw(server, "labelled", data)
    assert status == 200 and headers["Content-Type"] == "application/octet-stream"
    header, tail = _split(headers, body)
    assert header == {
        "model_name": "labelled",
        "model_version": "1",
        "outputs": [
            {"name": "OUTPUT0", "datatype": "FP32", "shape": [4], "parameters": {"binary_data_size": 16}}
        ],
    }
    assert tail == data
    # A batching model gets a batch of one, as in Triton.
    status, headers, body = _post_raw(server, "batched", data)
    header, tail = _split(headers, body)
    assert status == 200 and header["outputs"][0]["shape"] == [1, 4] and tail == data  # type: ignore[index]


def test_raw_binary_shapes_from_the_body(server: RunningServer) -> None:
    data = np.arange(6, dtype=np.float32).tobytes()
    status, headers, body = _post_raw(server, "variable", data)  # dims [-1]: 6 elements
    header, tail = _split(headers, body)
    assert status == 200 and header["outputs"][0]["shape"] == [6] and tail == data  # type: ignore[index]
    status, headers, body = _post_raw(server, "words", b"hello raw")  # BYTES: one element, the body
    header, tail = _split(headers, body)
    assert status == 200 and tail == len(b"HELLO RAW").to_bytes(4, "little") + b"HELLO RAW"


def test_raw_binary_refusals(server: RunningServer) -> None:
    status, _, body = _post_raw(server, "labelled", b"\x00" * 8)  # 2 elements where 4 are needed
    assert status == 400 and "INPUT0" in json.loads(body)["error"]
    status, _, body = _post_raw(server, "two_inputs", b"\x00" * 16)
    assert status == 400 and "exactly one input; 'two_inputs' has 2" in json.loads(body)["error"]
    status, _, body = _post_raw(server, "variable", b"\x00" * 6)
    assert status == 400 and "whole elements" in json.loads(body)["error"]
    status, _, body = _post_raw(server, "no_such_model", b"\x00" * 16)
    assert status == 404


def test_a_missing_label_file_is_refused_at_load(tmp_path: Path) -> None:
    model_dir = write_python_model(tmp_path, "orphan", "identity", max_batch_size=0, dims=[4])
    _with_labels(model_dir, "missing.txt")
    problems = check_model_config(load_model_config(model_dir), model_dir)
    assert [p.code for p in problems if p.severity == "error"] == ["E216-missing-label-file"]
    (model_dir / "missing.txt").write_text(LABELS)
    assert not [
        p for p in check_model_config(load_model_config(model_dir), model_dir) if p.severity == "error"
    ]


def test_response_cache_on_a_decoupled_model_is_refused(tmp_path: Path) -> None:
    model_dir = write_python_model(tmp_path, "streamer", "identity", max_batch_size=0, dims=[4])
    config = model_dir / "config.pbtxt"
    policies = "response_cache { enable: true }\nmodel_transaction_policy { decoupled: true }\n"
    config.write_text(config.read_text() + "\n" + policies)
    problems = check_model_config(load_model_config(model_dir), model_dir)
    assert "E347-response-cache-decoupled" in [p.code for p in problems if p.severity == "error"]
