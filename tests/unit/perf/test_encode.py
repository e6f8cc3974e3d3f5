"""Prebuilt requests decode back into what was meant (gRPC message, HTTP binary and JSON bodies)."""

from __future__ import annotations

import json

import numpy as np
from tritonclient.grpc import service_pb2

from tritonctl.perf.encode import grpc_payload, http_payload
from tritonctl.perf.inputs import InputSpec

SPECS = [InputSpec("A", "FP32", [2], True), InputSpec("S", "BYTES", [1], True)]
STEP = {"A": np.array([[1.5, 2.5]], dtype=np.float32), "S": np.array([[b"hey"]], dtype=object)}


def test_grpc_payload_is_a_model_infer_request() -> None:
    request = service_pb2.ModelInferRequest.FromString(grpc_payload("m", "2", SPECS, STEP))
    assert (request.model_name, request.model_version) == ("m", "2")
    assert [(t.name, t.datatype, list(t.shape)) for t in request.inputs] == [
        ("A", "FP32", [1, 2]),
        ("S", "BYTES", [1, 1]),
    ]
    assert np.frombuffer(request.raw_input_contents[0], dtype=np.float32).tolist() == [1.5, 2.5]
    assert request.raw_input_contents[1] == b"\x03\x00\x00\x00hey"


def _split(payload: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = payload.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert int(headers["Content-Length"]) == len(body)
    return lines[0], headers, body


def test_http_binary_payload() -> None:
    request_line, headers, body = _split(http_payload("h:1", model="m", version="", specs=SPECS, step=STEP))
    assert request_line == "POST /v2/models/m/infer HTTP/1.1"
    header_length = int(headers["Inference-Header-Content-Length"])
    header = json.loads(body[:header_length])
    assert header["parameters"] == {"binary_data_output": True}
    assert [t["parameters"]["binary_data_size"] for t in header["inputs"]] == [8, 7]
    assert body[header_length : header_length + 8] == STEP["A"].tobytes()


def test_http_json_payload() -> None:
    request_line, headers, body = _split(
        http_payload("h:1", model="m", version="3", specs=SPECS, step=STEP, encoding="json")
    )
    assert request_line == "POST /v2/models/m/versions/3/infer HTTP/1.1"
    assert "Inference-Header-Content-Length" not in headers
    document = json.loads(body)
    assert document["inputs"][0] == {"name": "A", "datatype": "FP32", "shape": [1, 2], "data": [1.5, 2.5]}
    assert document["inputs"][1]["data"] == ["hey"]
