"""The HTTP front end on the real server: every endpoint through tritonclient.http and raw HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.integration.protocol.helpers import (
    ADD_SUB_IDS,
    ADD_SUB_MODELS,
    AddSubModel,
    add_sub_operands,
    http_request,
    infer_body,
    split_responses,
)
from tests.support.server import RunningServer, send_raw

pytestmark = pytest.mark.integration


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpclient.InferenceServerClient]:
    with httpclient.InferenceServerClient(server.http_url) as http_client:
        yield http_client


@pytest.fixture
def raw(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{server.http_url}", timeout=30) as http:
        yield http


def add_sub_inputs(model: AddSubModel, binary: bool, rows: int = 2) -> list[httpclient.InferInput]:
    tensors = []
    for name, value in zip(model.inputs, add_sub_operands(rows), strict=True):
        tensor = httpclient.InferInput(name, list(value.shape), "FP32")
        tensor.set_data_from_numpy(value, binary_data=binary)
        tensors.append(tensor)
    return tensors


def assert_add_sub_works(client: httpclient.InferenceServerClient, model: AddSubModel) -> None:
    result = client.infer(model.name, add_sub_inputs(model, binary=True))
    a, b = add_sub_operands()
    np.testing.assert_allclose(result.as_numpy(model.outputs[0]), a + b)
    np.testing.assert_allclose(result.as_numpy(model.outputs[1]), a - b)


# -- health, metadata, config, statistics, index --------------------------------------------------
def test_health_and_server_metadata(client: httpclient.InferenceServerClient, raw: httpx.Client) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "triton"
    assert "binary_tensor_data" in metadata["extensions"]
    assert raw.get("/v2/health/live").status_code == 200
    assert list(raw.get("/v2").json()) == ["name", "version", "extensions"]


@pytest.mark.parametrize("model", ADD_SUB_MODELS, ids=ADD_SUB_IDS)
def test_model_metadata_and_config(client: httpclient.InferenceServerClient, model: AddSubModel) -> None:
    for version in ("", "1"):
        metadata = client.get_model_metadata(model.name, version)
        assert metadata["name"] == model.name
        assert metadata["versions"] == ["1"]
        assert metadata["platform"] == model.platform
        assert [t["name"] for t in metadata["inputs"]] == list(model.inputs)
        assert [t["name"] for t in metadata["outputs"]] == list(model.outputs)
        assert all(t["datatype"] == "FP32" and t["shape"] == [-1, 4] for t in metadata["inputs"])
    config = client.get_model_config(model.name)
    assert list(config)[:3] == ["name", "platform", "backend"]  # Triton's field order
    assert config["max_batch_size"] == 8  # numbers, not protobuf-JSON strings
    assert config["input"][0]["dims"] == [4]
    assert client.is_model_ready(model.name)
    assert client.is_model_ready(model.name, "1")


def test_statistics_count_inferences(client: httpclient.InferenceServerClient, raw: httpx.Client) -> None:
    model = ADD_SUB_MODELS[0]
    before = client.get_inference_statistics(model.name)["model_stats"][0]
    assert_add_sub_works(client, model)
    after = client.get_inference_statistics(model.name, "1")["model_stats"][0]
    assert after["inference_stats"]["success"]["count"] == before["inference_stats"]["success"]["count"] + 1
    assert isinstance(after["inference_count"], int)
    assert list(after)[:7] == [
        "name",
        "version",
        "last_inference",
        "inference_count",
        "execution_count",
        "inference_stats",
        "response_stats",
    ]
    every = raw.get("/v2/models/stats").json()["model_stats"]
    assert {"py_identity", "onnx_add_sub", "ts_add_sub"} <= {entry["name"] for entry in every}


def test_repository_index_and_readiness(client: httpclient.InferenceServerClient, raw: httpx.Client) -> None:
    index = {entry["name"]: entry for entry in client.get_model_repository_index()}
    assert index["py_identity"] == {"name": "py_identity", "version": "1", "state": "READY"}
    assert index["never_loaded"] == {"name": "never_loaded"}  # only its name, like Triton
    ready_only = raw.post("/v2/repository/index", json={"ready": True}).json()
    assert "never_loaded" not in {entry["name"] for entry in ready_only}
    assert not client.is_model_ready("never_loaded")
    answer = raw.get("/v2/models/never_loaded/ready")
    assert answer.status_code == 400
    assert answer.json() == {"error": "Model version not ready"}


# -- inference -------------------------------------------------------------------------------------
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("model", ADD_SUB_MODELS, ids=ADD_SUB_IDS)
def test_infer_add_sub(client: httpclient.InferenceServerClient, model: AddSubModel, binary: bool) -> None:
    outputs = [httpclient.InferRequestedOutput(name, binary_data=binary) for name in model.outputs]
    result = client.infer(model.name, add_sub_inputs(model, binary), outputs=outputs, request_id="r-7")
    a, b = add_sub_operands()
    np.testing.assert_allclose(result.as_numpy(model.outputs[0]), a + b)
    np.testing.assert_allclose(result.as_numpy(model.outputs[1]), a - b)
    response = result.get_response()
    assert response["id"] == "r-7"
    assert response["model_name"] == model.name
    assert response["model_version"] == "1"


def test_infer_only_the_requested_output(client: httpclient.InferenceServerClient) -> None:
    model = ADD_SUB_MODELS[0]
    result = client.infer(
        model.name, add_sub_inputs(model, True), outputs=[httpclient.InferRequestedOutput("OUTPUT1")]
    )
    assert [output["name"] for output in result.get_response()["outputs"]] == ["OUTPUT1"]


def test_json_response_shape_matches_triton(raw: httpx.Client) -> None:
    data = list(range(16))
    body = infer_body([{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": [data]}])
    answer = raw.post("/v2/models/py_identity/infer", content=body)
    assert answer.status_code == 200
    assert answer.content == (
        b'{"model_name":"py_identity","model_version":"1","outputs":[{"name":"OUTPUT0","datatype":"FP32",'
        b'"shape":[1,16],"data":[' + ",".join(f"{v}.0" for v in data).encode() + b"]}]}"
    )


def test_binary_output_by_request_parameter(raw: httpx.Client) -> None:
    value = np.arange(16, dtype=np.float32).reshape(1, 16)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT0",
                    "datatype": "FP32",
                    "shape": [1, 16],
                    "parameters": {"binary_data_size": 64},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    answer = raw.post(
        "/v2/models/py_identity/infer",
        content=header + value.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert answer.headers["content-type"] == "application/octet-stream"
    json_size = int(answer.headers["inference-header-content-length"])
    described = json.loads(answer.content[:json_size])
    assert described["outputs"][0]["parameters"] == {"binary_data_size": 64}
    assert answer.content[json_size:] == value.tobytes()


DTYPE_VALUES = {
    "BOOL": np.array([True, False, True]),
    "UINT8": np.array([0, 7, 255], np.uint8),
    "INT8": np.array([-128, 0, 127], np.int8),
    "INT16": np.array([-3, 0, 30000], np.int16),
    "INT32": np.array([-(2**31), 0, 2**31 - 1], np.int32),
    "INT64": np.array([-(2**63), 0, 2**63 - 1], np.int64),
    "UINT64": np.array([0, 1, 2**64 - 1], np.uint64),
    "FP16": np.array([0.5, -1.25, 65504], np.float16),
    "FP32": np.array([0.1, -2.5, 3e38], np.float32),
    "FP64": np.array([0.1, -2.5, 1e300], np.float64),
    "BYTES": np.array([b"ab", "ü".encode(), b""], dtype=np.object_),
}


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", list(DTYPE_VALUES))
def test_every_datatype_round_trips(
    client: httpclient.InferenceServerClient, datatype: str, binary: bool
) -> None:
    value = DTYPE_VALUES[datatype]
    tensor = httpclient.InferInput(f"IN_{datatype}", list(value.shape), datatype)
    # Like Triton, FP16 travels only as binary data over HTTP (tritonclient knows and sends binary).
    tensor.set_data_from_numpy(value, binary_data=binary or datatype == "FP16")
    output = httpclient.InferRequestedOutput(f"OUT_{datatype}", binary_data=binary or datatype == "FP16")
    result = client.infer("py_dtypes", [tensor], outputs=[output])
    answer = result.as_numpy(f"OUT_{datatype}")
    if datatype == "BYTES" and not binary:  # JSON strings come back as str from tritonclient
        answer = np.array([item.encode() for item in answer], dtype=np.object_)
    np.testing.assert_array_equal(answer, value)


def test_fp16_json_is_refused_like_triton(raw: httpx.Client) -> None:
    body = infer_body([{"name": "IN_FP16", "datatype": "FP16", "shape": [2], "data": [1.5, 2.5]}])
    answer = raw.post("/v2/models/py_dtypes/infer", content=body)
    assert answer.status_code == 400
    assert answer.json()["error"] == (
        "receiving FP16 data via JSON is not supported. Please use the binary data format for input IN_FP16"
    )
    header = json.dumps(
        {
            "inputs": [
                {"name": "IN_FP16", "datatype": "FP16", "shape": [1], "parameters": {"binary_data_size": 2}}
            ],
            "outputs": [{"name": "OUT_FP16", "parameters": {"binary_data": False}}],
        }
    ).encode()
    answer = raw.post(
        "/v2/models/py_dtypes/infer",
        content=header + np.float16(1.5).tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert answer.status_code == 400
    assert "sending FP16 data via JSON is not supported" in answer.json()["error"]


def test_bf16_travels_as_binary(raw: httpx.Client) -> None:
    words = np.array([0x3FC0, 0x4020, 0xBF80], np.uint16)  # 1.5, 2.5, -1.0 in bfloat16
    header = json.dumps(
        {
            "inputs": [
                {"name": "IN_BF16", "datatype": "BF16", "shape": [3], "parameters": {"binary_data_size": 6}}
            ],
            "outputs": [{"name": "OUT_BF16", "parameters": {"binary_data": True}}],
        }
    ).encode()
    answer = raw.post(
        "/v2/models/py_dtypes/infer",
        content=header + words.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert answer.status_code == 200, answer.text
    json_size = int(answer.headers["inference-header-content-length"])
    assert answer.content[json_size:] == words.tobytes()
    as_json = raw.post(
        "/v2/models/py_dtypes/infer",
        content=infer_body([{"name": "IN_BF16", "datatype": "BF16", "shape": [1], "data": [1.5]}]),
    )
    assert as_json.status_code == 400
    assert "receiving BF16 data via JSON is not supported" in as_json.json()["error"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_strings_model(client: httpclient.InferenceServerClient, binary: bool) -> None:
    value = np.array([[b"hello", b"triton"]], dtype=np.object_)
    tensor = httpclient.InferInput("INPUT0", [1, 2], "BYTES")
    tensor.set_data_from_numpy(value, binary_data=binary)
    outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)]
    result = client.infer("py_strings", [tensor], outputs=outputs)
    expected = [[b"HELLO", b"TRITON"]] if binary else [["HELLO", "TRITON"]]  # JSON gives str
    assert result.as_numpy("OUTPUT0").tolist() == expected


def test_classification_extension(client: httpclient.InferenceServerClient) -> None:
    value = np.arange(16, dtype=np.float32).reshape(1, 16)
    tensor = httpclient.InferInput("INPUT0", [1, 16], "FP32")
    tensor.set_data_from_numpy(value)
    output = httpclient.InferRequestedOutput("OUTPUT0", class_count=2)
    result = client.infer("py_identity", [tensor], outputs=[output])
    assert result.as_numpy("OUTPUT0").tolist() == [[b"15.000000:15", b"14.000000:14"]]


def test_compressed_request_and_response(client: httpclient.InferenceServerClient) -> None:
    model = ADD_SUB_MODELS[0]
    for request_algorithm, response_algorithm in (("gzip", "deflate"), ("deflate", "gzip")):
        result = client.infer(
            model.name,
            add_sub_inputs(model, True),
            request_compression_algorithm=request_algorithm,
            response_compression_algorithm=response_algorithm,
        )
        a, b = add_sub_operands()
        np.testing.assert_allclose(result.as_numpy(model.outputs[0]), a + b)


# -- errors: the right status and text, and the server keeps serving ------------------------------
def _error_cases(model: AddSubModel) -> dict[str, tuple[int, str, bytes, dict[str, str]]]:
    a, b = add_sub_operands(1)
    first, second = model.inputs

    def tensor(name: str, datatype: str = "FP32", shape: tuple[int, ...] = (1, 4)) -> dict[str, object]:
        return {"name": name, "datatype": datatype, "shape": list(shape), "data": [0] * int(np.prod(shape))}

    binary_header = json.dumps(
        {
            "inputs": [
                {"name": first, "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 12}},
                {"name": second, "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}},
            ]
        }
    ).encode()
    return {
        "unknown_model": (404, "unknown model", infer_body([tensor(first)]), {}),
        "wrong_shape": (
            400,
            "unexpected shape",
            infer_body([tensor(first, shape=(1, 5)), tensor(second)]),
            {},
        ),
        "wrong_dtype": (
            400,
            "data-type is 'INT32'",
            infer_body([tensor(first, "INT32"), tensor(second)]),
            {},
        ),
        "missing_input": (400, "missing required input", infer_body([tensor(first)]), {}),
        "unknown_output": (
            400,
            "unexpected inference output 'NOPE'",
            infer_body([tensor(first), tensor(second)], outputs=[{"name": "NOPE"}]),
            {},
        ),
        "byte_size_mismatch": (
            400,
            "byte size mismatch",
            binary_header + a.tobytes()[:12] + b.tobytes(),
            {"Inference-Header-Content-Length": str(len(binary_header))},
        ),
        "malformed_json": (400, "failed to parse the request JSON", b"{not json", {}),
    }


ERROR_NAMES = list(_error_cases(ADD_SUB_MODELS[0]))


@pytest.mark.parametrize("case", ERROR_NAMES)
@pytest.mark.parametrize("model", ADD_SUB_MODELS, ids=ADD_SUB_IDS)
def test_errors_then_keeps_serving(
    client: httpclient.InferenceServerClient, raw: httpx.Client, model: AddSubModel, case: str
) -> None:
    status, text, body, headers = _error_cases(model)[case]
    target = "no_such_model" if case == "unknown_model" else model.name
    answer = raw.post(f"/v2/models/{target}/infer", content=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert text in answer.json()["error"]
    assert_add_sub_works(client, model)


def test_tritonclient_sees_status_codes(client: httpclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as unknown:
        client.get_model_metadata("no_such_model")
    assert unknown.value.status() == "404"
    assert "Request for unknown model: 'no_such_model' is not found" in unknown.value.message()
    with pytest.raises(InferenceServerException) as unsupported:
        client.get_trace_settings()  # the trace extension is the one still not offered
    assert unsupported.value.status() == "501"


def test_routes_methods_and_unsupported_extensions(raw: httpx.Client) -> None:
    assert raw.get("/v2/nothing").status_code == 404
    assert raw.get("/v2/models/py_identity/versions/abc").status_code == 404
    assert raw.delete("/v2/models/py_identity").status_code == 405
    assert raw.get("/v2/models/py_identity/infer").status_code == 405
    for path in ("/v2/trace/setting",):
        answer = raw.get(path)
        assert answer.status_code == 501
        assert "not supported" in answer.json()["error"]
    # Shared memory is served (off without --allow-client-shm: no region, registering refused).
    assert raw.get("/v2/systemsharedmemory/status").json() == []
    assert (
        raw.post("/v2/systemsharedmemory/region/r/register", json={"key": "/k", "byte_size": 4}).status_code
        == 403
    )


# -- the HTTP layer itself ------------------------------------------------------------------------
def test_body_limit_is_checked_before_reading_the_body(server: RunningServer) -> None:
    # Content-Length says 1 GiB but no body follows: the answer must come without waiting for it.
    head = http_request("POST", "/v2/models/py_identity/infer").replace(
        b"Content-Length: 0", b"Content-Length: 1073741824"
    )
    (status, _headers, body), *_ = split_responses(send_raw(server.http_port, head))
    assert status == 400
    assert "--http-max-input-size" in json.loads(body)["error"]


def test_pipelined_requests_are_answered_in_order(server: RunningServer) -> None:
    infer = infer_body([{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": [1.0] * 16}])
    payload = (
        http_request("GET", "/v2/models/py_identity")
        + http_request("POST", "/v2/models/py_identity/infer", infer)
        + http_request("GET", "/v2/models/no_such_model")
        + http_request("GET", "/v2/health/live", headers={"Connection": "close"})
    )
    answers = split_responses(send_raw(server.http_port, payload))
    assert [status for status, _, _ in answers] == [200, 200, 404, 200]
    assert json.loads(answers[0][2])["name"] == "py_identity"
    assert json.loads(answers[1][2])["outputs"][0]["data"] == [1.0] * 16
    assert answers[3][1].get("connection") == "close"


def test_malformed_http_gets_400_and_server_survives(
    server: RunningServer, client: httpclient.InferenceServerClient
) -> None:
    answer = send_raw(server.http_port, b"NOT-HTTP \x00\x01\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400")
    chunked = (
        b"POST /v2/models/py_identity/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n"
    )
    body = infer_body([{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": [2.0] * 16}])
    chunks = b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (body[:10], body[10:]))
    (status, _, payload), *_ = split_responses(send_raw(server.http_port, chunked + chunks + b"0\r\n\r\n"))
    assert status == 200
    assert json.loads(payload)["outputs"][0]["data"] == [2.0] * 16
    assert client.is_server_live()
