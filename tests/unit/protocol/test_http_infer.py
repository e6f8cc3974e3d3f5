"""HTTP inference through `HttpApp.handle` (infer_codec.py, tensor_codec.py) on real in-process models."""

from __future__ import annotations

import gzip
import struct
from typing import Any

import numpy as np
import orjson
import pytest

from server.protocol.http.routes import HttpRequest, HttpResponse, InferCall
from tests.unit.protocol.http_harness import (
    INFER,
    Http,
    error_of,
    fp32_input,
    infer_body,
    json_of,
)


def binary_request(header: dict[str, Any], *parts: bytes) -> tuple[bytes, str]:
    """(body, Inference-Header-Content-Length) of a binary-extension request."""
    json_part = orjson.dumps(header)
    return json_part + b"".join(parts), str(len(json_part))


def split_binary(body: bytes, header_length: int) -> tuple[dict[str, Any], bytes]:
    return orjson.loads(body[:header_length]), body[header_length:]


def test_json_in_json_out_with_the_id_echoed(http: Http) -> None:
    response = http.post(INFER, infer_body(fp32_input([1, 2, 3, 4]), id="req-7"))
    assert response.status == 200 and response.content_type == "application/json"
    assert json_of(response) == {
        "id": "req-7",
        "model_name": "identity",
        "model_version": "1",
        "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [1, 4], "data": [1.0, 2.0, 3.0, 4.0]}],
    }


def test_nested_json_data_and_a_numeric_id(http: Http) -> None:
    body = infer_body(fp32_input([[1, 2, 3, 4], [5, 6, 7, 8]], shape=[2, 4]), id=12)  # type: ignore[list-item]
    answer = json_of(http.post(INFER, body))
    assert answer["id"] == "12"
    assert answer["outputs"][0]["shape"] == [2, 4]
    assert answer["outputs"][0]["data"] == [float(v) for v in range(1, 9)]


def test_a_version_in_the_path(http: Http) -> None:
    response = http.post("/v2/models/identity/versions/1/infer", infer_body(fp32_input([0, 0, 0, 1])))
    assert response.status == 200 and json_of(response)["model_version"] == "1"
    missing = http.post("/v2/models/identity/versions/2/infer", infer_body(fp32_input([0, 0, 0, 1])))
    assert missing.status == 404
    assert error_of(missing) == "Request for unknown model: 'identity' version 2 is not found"


def test_binary_input_and_binary_output(http: Http) -> None:
    data = np.arange(8, dtype=np.float32)
    header = {
        "inputs": [
            {"name": "INPUT0", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 32}}
        ],
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}],
    }
    body, length = binary_request(header, data.tobytes())
    response = http.post(INFER, body, inference_header_content_length=length)
    assert response.status == 200 and response.content_type == "application/octet-stream"
    [(name, value)] = response.headers
    assert name == "Inference-Header-Content-Length" and int(value) == len(response.body)
    answer = orjson.loads(response.body)
    assert answer["outputs"][0]["parameters"] == {"binary_data_size": 32}
    assert "data" not in answer["outputs"][0]
    assert b"".join(bytes(part) for part in response.tail) == data.tobytes()
    assert response.content_length == len(response.body) + 32


def test_binary_data_output_for_every_output_unless_one_says_otherwise(http: Http) -> None:
    inputs = [fp32_input([1, 2, 3, 4]), fp32_input([1, 1, 1, 1], name="INPUT1")]
    outputs = [{"name": "OUTPUT0"}, {"name": "OUTPUT1", "parameters": {"binary_data": False}}]
    body = infer_body(*inputs, outputs=outputs, parameters={"binary_data_output": True})
    response = http.post("/v2/models/add_sub/infer", body)
    header = orjson.loads(response.body)
    first, second = header["outputs"]
    assert first["parameters"] == {"binary_data_size": 16} and "data" not in first
    assert second["data"] == [0.0, 1.0, 2.0, 3.0]
    assert np.frombuffer(b"".join(bytes(p) for p in response.tail), np.float32).tolist() == [2, 3, 4, 5]


def test_requested_outputs_only_and_a_repeated_output_once(http: Http) -> None:
    inputs = [fp32_input([1, 2, 3, 4]), fp32_input([1, 1, 1, 1], name="INPUT1")]
    body = infer_body(*inputs, outputs=[{"name": "OUTPUT1"}, {"name": "OUTPUT1"}])
    outputs = json_of(http.post("/v2/models/add_sub/infer", body))["outputs"]
    assert [(o["name"], o["data"]) for o in outputs] == [("OUTPUT1", [0.0, 1.0, 2.0, 3.0])]


def test_bytes_tensors_in_json_and_binary(http: Http) -> None:
    body = infer_body({"name": "INPUT0", "shape": [1, 2], "datatype": "BYTES", "data": ["ab", "cé"]})
    [output] = json_of(http.post("/v2/models/strings/infer", body))["outputs"]
    assert (output["datatype"], output["shape"], output["data"]) == ("BYTES", [1, 2], ["AB", "Cé"])
    raw = b"".join(struct.pack("<I", len(item)) + item for item in (b"xy", b"\xff"))
    header = {
        "inputs": [
            {
                "name": "INPUT0",
                "shape": [1, 2],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}],
    }
    binary, length = binary_request(header, raw)
    response = http.post("/v2/models/strings/infer", binary, inference_header_content_length=length)
    assert b"".join(bytes(p) for p in response.tail) == raw.replace(b"xy", b"XY")  # exact bytes
    as_text, length = binary_request({**header, "outputs": [{"name": "OUTPUT0"}]}, raw)
    text = http.post("/v2/models/strings/infer", as_text, inference_header_content_length=length)
    assert json_of(text)["outputs"][0]["data"] == ["XY", "\ufffd"]  # not UTF-8: replaced in JSON


def test_fp16_travels_binary_only(http: Http) -> None:
    half = {"name": "INPUT0", "shape": [1, 2], "datatype": "FP16", "data": [1.0, 2.0]}
    refused = http.post("/v2/models/half/infer", infer_body(half))
    assert refused.status == 400
    assert error_of(refused) == (
        "receiving FP16 data via JSON is not supported. Please use the binary data format for input INPUT0"
    )
    data = np.array([[1.5, -2.0]], np.float16)
    header: dict[str, Any] = {
        "inputs": [
            {"name": "INPUT0", "shape": [1, 2], "datatype": "FP16", "parameters": {"binary_data_size": 4}}
        ]
    }
    body, length = binary_request(header, data.tobytes())
    as_json = http.post("/v2/models/half/infer", body, inference_header_content_length=length)
    assert as_json.status == 400
    assert error_of(as_json) == (
        "sending FP16 data via JSON is not supported. Please use the binary data format for output OUTPUT0"
    )
    header["parameters"] = {"binary_data_output": True}
    body, length = binary_request(header, data.tobytes())
    binary = http.post("/v2/models/half/infer", body, inference_header_content_length=length)
    assert binary.status == 200 and b"".join(bytes(p) for p in binary.tail) == data.tobytes()


def test_classification_top_k_per_row_of_a_batched_model(http: Http) -> None:
    body = infer_body(
        fp32_input([[0.1, 0.7, 0.2, 0.7], [4, 3, 2, 1]], shape=[2, 4]),  # type: ignore[list-item]
        outputs=[{"name": "OUTPUT0", "parameters": {"classification": 2}}],
    )
    [output] = json_of(http.post(INFER, body))["outputs"]
    assert output["datatype"] == "BYTES" and output["shape"] == [2, 2]
    # equal values: the lower index first
    assert output["data"] == ["0.700000:1", "0.700000:3", "4.000000:0", "3.000000:1"]


def test_classification_of_an_unbatched_model_caps_k_at_the_values(http: Http) -> None:
    body = infer_body(
        fp32_input([3, 1, 4, 1], shape=[4]),
        outputs=[{"name": "OUTPUT0", "parameters": {"classification": 9}}],
    )
    [output] = json_of(http.post("/v2/models/flat/infer", body))["outputs"]
    assert output["shape"] == [4]
    assert output["data"] == ["4.000000:2", "3.000000:0", "1.000000:1", "1.000000:3"]


def test_classification_of_bytes_is_refused(http: Http) -> None:
    body = infer_body(
        {"name": "INPUT0", "shape": [1, 2], "datatype": "BYTES", "data": ["a", "b"]},
        outputs=[{"name": "OUTPUT0", "parameters": {"classification": 1}}],
    )
    refused = http.post("/v2/models/strings/infer", body)
    assert refused.status == 400 and error_of(refused) == "classification is not supported for BYTES outputs"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "failed to parse the request JSON buffer"),
        (b"[1, 2]", "failed to parse the request JSON buffer: expected a JSON object"),
        (b'{"inputs": {}}', "Unable to parse 'inputs': expected a JSON array"),
        (b'{"inputs": [7]}', "Unable to parse 'inputs': expected a JSON object"),
        (b'{"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}', "Unable to parse 'name'"),
        (
            b'{"inputs": [{"name": "INPUT0", "shape": [1], "data": [1]}]}',
            "Unable to parse 'datatype' of input",
        ),
        (
            b'{"inputs": [{"name": "INPUT0", "shape": [1], "datatype": "FP33", "data": [1]}]}',
            "invalid datatype",
        ),
        (
            b'{"inputs": [{"name": "INPUT0", "shape": [-1], "datatype": "FP32", "data": [1]}]}',
            "'shape' of input",
        ),
        (
            b'{"inputs": [{"name": "INPUT0", "shape": "1", "datatype": "FP32", "data": [1]}]}',
            "'shape' of input",
        ),
        (b'{"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32"}]}', "But no field is set"),
        (
            b'{"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4],'
            b' "parameters": {"binary_data_size": 16}}]}',
            "But both 'data' and 'binary_data_size' are set",
        ),
        (
            b'{"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32",'
            b' "parameters": {"binary_data_size": -1}}]}',
            "'binary_data_size' of input 'INPUT0' must be a non-negative integer",
        ),
        (
            b'{"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32",'
            b' "parameters": {"binary_data_size": 16}}]}',
            "unexpected size for input 'INPUT0', expecting 16 additional bytes for model 'identity'",
        ),
        (
            b'{"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3]}]}',
            "needs 4",
        ),
        (
            b'{"inputs": [{"name": "INPUT0", "shape": [1, 2], "datatype": "INT8", "data": [1, 300]}]}',
            "as INT8",
        ),
        (
            b'{"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "BYTES", "data": [1]}]}',
            "JSON strings",
        ),
        (b'{"inputs": [], "parameters": []}', "Unable to parse 'parameters': expected a JSON object"),
        (b'{"inputs": [], "outputs": {}}', "Unable to parse 'outputs': expected a JSON array"),
        (b'{"inputs": [], "outputs": [{}]}', "every requested output needs a string 'name'"),
        (
            b'{"inputs": [], "outputs": [{"name": "OUTPUT0", "parameters": {"classification": 0}}]}',
            "'classification' of output 'OUTPUT0' must be a positive integer",
        ),
    ],
)
def test_malformed_bodies_are_400_with_the_reason(http: Http, body: bytes, message: str) -> None:
    response = http.post(INFER, body)
    assert response.status == 400, response.body
    assert message in error_of(response)


def test_a_duplicate_input_is_refused(http: Http) -> None:
    response = http.post(INFER, infer_body(fp32_input([1, 2, 3, 4]), fp32_input([1, 2, 3, 4])))
    assert response.status == 400 and error_of(response) == "input 'INPUT0' already exists in request"


def test_shared_memory_needs_allow_client_shm(http: Http) -> None:
    """An HttpApp without a region table (the server without --allow-client-shm) refuses regions."""
    region = {"shared_memory_region": "r", "shared_memory_byte_size": 16}
    as_input = {"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "parameters": region}
    refused = http.post(INFER, infer_body(as_input))
    assert refused.status == 403 and "--allow-client-shm" in error_of(refused)
    as_output = infer_body(fp32_input([1, 2, 3, 4]), outputs=[{"name": "OUTPUT0", "parameters": region}])
    assert http.post(INFER, as_output).status == 403


@pytest.mark.parametrize(
    ("tensor", "fragment"),
    [
        (fp32_input([1, 2, 3, 4, 5]), "shape"),  # configured dims are [4]
        ({"name": "INPUT0", "shape": [1, 4], "datatype": "INT32", "data": [1, 2, 3, 4]}, "data-type"),
        (fp32_input([1, 2, 3, 4], name="NOPE"), "NOPE"),
    ],
)
def test_what_the_model_does_not_take_is_400(http: Http, tensor: dict[str, Any], fragment: str) -> None:
    response = http.post(INFER, infer_body(tensor))
    assert response.status == 400, response.body
    assert fragment in error_of(response)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("many", "Inference-Header-Content-Length must be an integer, got 'many'"),
        ("-1", "inference header size should be in range (0, "),
        ("100000", "inference header size should be in range (0, "),
    ],
)
def test_a_bad_inference_header_length_is_400(http: Http, value: str, message: str) -> None:
    response = http.post(INFER, infer_body(fp32_input([1, 2, 3, 4])), inference_header_content_length=value)
    assert response.status == 400 and message in error_of(response)


def test_bytes_after_the_inputs_are_refused(http: Http) -> None:
    body, length = binary_request(infer_body(fp32_input([1, 2, 3, 4])), b"\0" * 8)
    response = http.post(INFER, body, inference_header_content_length=length)
    assert response.status == 400
    assert error_of(response) == "unexpected additional input data for model 'identity'"


def test_the_hot_path_decodes_queues_and_answers(http: Http) -> None:
    body = orjson.dumps(infer_body(fp32_input([4, 3, 2, 1])))
    call = http.start_infer(HttpRequest("POST", INFER, {"accept-encoding": "gzip"}, body))
    assert isinstance(call, InferCall)
    response = http.finish_infer(call)
    assert response.status == 200 and ("Content-Encoding", "gzip") in response.headers
    assert orjson.loads(gzip.decompress(response.body))["outputs"][0]["data"] == [4.0, 3.0, 2.0, 1.0]


def test_the_hot_path_answers_errors_at_once_and_leaves_the_rest_to_handle(http: Http) -> None:
    refused = http.start_infer(HttpRequest("POST", INFER, {}, b"{"))
    assert isinstance(refused, HttpResponse) and refused.status == 400
    unknown = http.start_infer(HttpRequest("POST", "/v2/models/ghost/infer", {}, body_of([1, 2])))
    assert isinstance(unknown, HttpResponse) and unknown.status == 404 and "ghost" in error_of(unknown)
    for method, path in [
        ("GET", INFER),
        ("POST", "/v2/models/identity"),
        ("POST", "/v2/models//infer"),
        ("POST", "/v2/models/identity/versions/x/infer"),
        ("POST", "/v1/models/identity/infer"),
    ]:
        assert http.start_infer(HttpRequest(method, path, {}, b"")) is None, path


def test_an_error_of_the_model_settles_through_finish_infer(http: Http) -> None:
    # FP16 output asked as JSON: the model answers, the encoding of its answer fails.
    data = np.array([[1.5, -2.0]], np.float16)
    header = {
        "inputs": [
            {"name": "INPUT0", "shape": [1, 2], "datatype": "FP16", "parameters": {"binary_data_size": 4}}
        ]
    }
    body, length = binary_request(header, data.tobytes())
    request = HttpRequest("POST", "/v2/models/half/infer", {"inference-header-content-length": length}, body)
    call = http.start_infer(request)
    assert isinstance(call, InferCall)
    response = http.finish_infer(call)
    assert response.status == 400 and "sending FP16 data via JSON is not supported" in error_of(response)


def body_of(values: list[float]) -> bytes:
    return orjson.dumps(infer_body(fp32_input(values)))
