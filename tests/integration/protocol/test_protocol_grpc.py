"""The gRPC front end on the real server: every RPC through tritonclient.grpc and the raw stubs."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.integration.protocol.helpers import ADD_SUB_IDS, ADD_SUB_MODELS, AddSubModel, add_sub_operands
from tests.support.server import RunningServer

pytestmark = pytest.mark.integration


@pytest.fixture
def client(server: RunningServer) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(server.grpc_url) as grpc_client:
        yield grpc_client


@pytest.fixture
def stub(server: RunningServer) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.grpc_url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def add_sub_inputs(model: AddSubModel, rows: int = 2, shape: list[int] | None = None) -> list[Any]:
    tensors = []
    for name, value in zip(model.inputs, add_sub_operands(rows), strict=True):
        tensor = grpcclient.InferInput(name, shape or list(value.shape), "FP32")
        tensor.set_data_from_numpy(value)
        tensors.append(tensor)
    return tensors


def assert_add_sub_works(client: grpcclient.InferenceServerClient, model: AddSubModel) -> None:
    result = client.infer(model.name, add_sub_inputs(model))
    a, b = add_sub_operands()
    np.testing.assert_allclose(result.as_numpy(model.outputs[0]), a + b)
    np.testing.assert_allclose(result.as_numpy(model.outputs[1]), a - b)


def fp32_request(model: str, name: str, values: np.ndarray, **fields: Any) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model, **fields)
    tensor = request.inputs.add(name=name, datatype="FP32", shape=list(values.shape))
    tensor.contents.fp32_contents.extend(values.ravel().tolist())
    return request


# -- health, metadata, config, statistics, index --------------------------------------------------
def test_health_and_server_metadata(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata.name == "triton"
    assert "statistics" in metadata.extensions


@pytest.mark.parametrize("model", ADD_SUB_MODELS, ids=ADD_SUB_IDS)
def test_model_metadata_config_and_stats(
    client: grpcclient.InferenceServerClient, model: AddSubModel
) -> None:
    metadata = client.get_model_metadata(model.name)
    assert (metadata.name, list(metadata.versions), metadata.platform) == (model.name, ["1"], model.platform)
    assert [t.name for t in metadata.inputs] == list(model.inputs)
    assert [list(t.shape) for t in metadata.outputs] == [[-1, 4], [-1, 4]]
    config = client.get_model_config(model.name, "1").config
    assert config.name == model.name
    assert config.max_batch_size == 8
    assert client.is_model_ready(model.name)
    before = client.get_inference_statistics(model.name).model_stats[0].inference_stats.success.count
    assert_add_sub_works(client, model)
    after = client.get_inference_statistics(model.name, "1").model_stats[0].inference_stats.success.count
    assert after == before + 1


def test_repository_index(client: grpcclient.InferenceServerClient) -> None:
    index = {entry.name: entry for entry in client.get_model_repository_index().models}
    assert (index["onnx_add_sub"].version, index["onnx_add_sub"].state) == ("1", "READY")
    assert index["never_loaded"].state == ""
    assert not client.is_model_ready("never_loaded")


# -- inference -------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ADD_SUB_MODELS, ids=ADD_SUB_IDS)
def test_infer_raw_contents(client: grpcclient.InferenceServerClient, model: AddSubModel) -> None:
    result = client.infer(model.name, add_sub_inputs(model), request_id="g-1", model_version="1")
    a, b = add_sub_operands()
    np.testing.assert_allclose(result.as_numpy(model.outputs[0]), a + b)
    np.testing.assert_allclose(result.as_numpy(model.outputs[1]), a - b)
    response = result.get_response()
    assert (response.id, response.model_name, response.model_version) == ("g-1", model.name, "1")
    assert len(response.raw_output_contents) == 2  # outputs go back raw, like Triton


def test_infer_typed_contents(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    values = np.arange(16, dtype=np.float32).reshape(1, 16)
    response = stub.ModelInfer(fp32_request("py_identity", "INPUT0", values))
    assert np.frombuffer(response.raw_output_contents[0], np.float32).tolist() == values.ravel().tolist()
    strings = service_pb2.ModelInferRequest(model_name="py_strings")
    tensor = strings.inputs.add(name="INPUT0", datatype="BYTES", shape=[1, 2])
    tensor.contents.bytes_contents.extend([b"ab", b"cd"])
    answer = stub.ModelInfer(strings)
    assert answer.raw_output_contents[0] == b"\x02\x00\x00\x00AB\x02\x00\x00\x00CD"


def test_typed_contents_of_the_wrong_type(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    request = service_pb2.ModelInferRequest(model_name="py_identity")
    tensor = request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 16])
    tensor.contents.int_contents.extend(range(16))
    with pytest.raises(grpc.RpcError) as error:
        stub.ModelInfer(request)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unexpected explicit tensor data for input tensor 'INPUT0'" in str(error.value.details())


DTYPE_VALUES = {
    "BOOL": np.array([True, False]),
    "UINT8": np.array([0, 255], np.uint8),
    "INT16": np.array([-3, 30000], np.int16),
    "INT64": np.array([-(2**63), 2**63 - 1], np.int64),
    "UINT64": np.array([0, 2**64 - 1], np.uint64),
    "FP16": np.array([0.5, 65504], np.float16),
    "FP64": np.array([0.1, 1e300], np.float64),
    "BYTES": np.array([b"x", b"\xff\x00"], dtype=np.object_),
}


@pytest.mark.parametrize("datatype", list(DTYPE_VALUES))
def test_every_datatype_round_trips(client: grpcclient.InferenceServerClient, datatype: str) -> None:
    value = DTYPE_VALUES[datatype]
    tensor = grpcclient.InferInput(f"IN_{datatype}", list(value.shape), datatype)
    tensor.set_data_from_numpy(value)
    result = client.infer("py_dtypes", [tensor], outputs=[grpcclient.InferRequestedOutput(f"OUT_{datatype}")])
    np.testing.assert_array_equal(result.as_numpy(f"OUT_{datatype}"), value)


def test_bf16_round_trips_raw(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    words = np.array([0x3FC0, 0xBF80], np.uint16)
    request = service_pb2.ModelInferRequest(model_name="py_dtypes", raw_input_contents=[words.tobytes()])
    request.inputs.add(name="IN_BF16", datatype="BF16", shape=[2])
    request.outputs.add(name="OUT_BF16")
    response = stub.ModelInfer(request)
    assert response.outputs[0].datatype == "BF16"
    assert response.raw_output_contents[0] == words.tobytes()


def test_messages_above_grpc_default_limit(client: grpcclient.InferenceServerClient) -> None:
    big = np.arange(6 * 1024 * 1024, dtype=np.uint8)  # grpc's own default limit is 4 MiB
    tensor = grpcclient.InferInput("IN_UINT8", [big.size], "UINT8")
    tensor.set_data_from_numpy(big)
    result = client.infer("py_dtypes", [tensor], outputs=[grpcclient.InferRequestedOutput("OUT_UINT8")])
    np.testing.assert_array_equal(result.as_numpy("OUT_UINT8"), big)


def test_classification(client: grpcclient.InferenceServerClient) -> None:
    tensor = grpcclient.InferInput("INPUT0", [1, 16], "FP32")
    tensor.set_data_from_numpy(np.arange(16, dtype=np.float32).reshape(1, 16))
    output = grpcclient.InferRequestedOutput("OUTPUT0", class_count=3)
    result = client.infer("py_identity", [tensor], outputs=[output])
    assert result.as_numpy("OUTPUT0").tolist() == [[b"15.000000:15", b"14.000000:14", b"13.000000:13"]]


def test_stream_infer_answers_each_request_and_survives_errors(
    client: grpcclient.InferenceServerClient,
) -> None:
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        model = ADD_SUB_MODELS[1]
        client.async_stream_infer(model.name, add_sub_inputs(model), request_id="ok-1")
        client.async_stream_infer("no_such_model", add_sub_inputs(model), request_id="bad")
        client.async_stream_infer(model.name, add_sub_inputs(model, rows=1), request_id="ok-2")
        received = [answers.get(timeout=30) for _ in range(3)]
    finally:
        client.stop_stream()
    results = {r.get_response().id: r for r, e in received if e is None}
    errors = [e for r, e in received if e is not None]
    assert set(results) == {"ok-1", "ok-2"}
    assert len(errors) == 1
    assert "unknown model" in str(errors[0])
    final = results["ok-1"].get_response().parameters["triton_final_response"].bool_param
    assert final is True
    a, b = add_sub_operands(1)
    np.testing.assert_allclose(results["ok-2"].as_numpy(model.outputs[1]), a - b)


# -- errors: the right status code and text, and the server keeps serving --------------------------
def _error_request(model: AddSubModel, case: str) -> tuple[str, list[Any], list[Any] | None]:
    a, _ = add_sub_operands(1)
    first, second = model.inputs

    def tensor(
        name: str, datatype: str = "FP32", shape: tuple[int, ...] = (1, 4), raw: bytes | None = None
    ) -> Any:
        item = grpcclient.InferInput(name, list(shape), datatype)
        if raw is None:
            dtype = np.int32 if datatype == "INT32" else np.float32
            item.set_data_from_numpy(np.zeros(shape, dtype))
        else:
            item._raw_content = raw  # a byte count that does not match the shape
        return item

    both = [tensor(first), tensor(second)]
    return {
        "unknown_model": ("no_such_model", both, None),
        "wrong_shape": (model.name, [tensor(first, shape=(1, 5)), tensor(second)], None),
        "wrong_dtype": (model.name, [tensor(first, "INT32"), tensor(second)], None),
        "missing_input": (model.name, [tensor(first)], None),
        "unknown_output": (model.name, both, [grpcclient.InferRequestedOutput("NOPE")]),
        "byte_size_mismatch": (model.name, [tensor(first, raw=a.tobytes()[:12]), tensor(second)], None),
    }[case]


ERRORS = {
    "unknown_model": ("NOT_FOUND", "Request for unknown model: 'no_such_model' is not found"),
    "wrong_shape": ("INVALID_ARGUMENT", "unexpected shape for input"),
    "wrong_dtype": ("INVALID_ARGUMENT", "data-type is 'INT32', but model"),
    "missing_input": ("INVALID_ARGUMENT", "missing required input(s)"),
    "unknown_output": ("INVALID_ARGUMENT", "unexpected inference output 'NOPE'"),
    "byte_size_mismatch": ("INVALID_ARGUMENT", "input byte size mismatch"),
}


@pytest.mark.parametrize("case", list(ERRORS))
@pytest.mark.parametrize("model", ADD_SUB_MODELS, ids=ADD_SUB_IDS)
def test_errors_then_keeps_serving(
    client: grpcclient.InferenceServerClient, model: AddSubModel, case: str
) -> None:
    target, inputs, outputs = _error_request(model, case)
    code, text = ERRORS[case]
    with pytest.raises(InferenceServerException) as error:
        client.infer(target, inputs, outputs=outputs)
    assert error.value.status() == f"StatusCode.{code}"
    assert text in error.value.message()
    assert_add_sub_works(client, model)


def test_metadata_errors_have_status_codes(client: grpcclient.InferenceServerClient) -> None:
    for call in (client.get_model_metadata, client.get_model_config):
        with pytest.raises(InferenceServerException) as error:
            call("no_such_model")
        assert error.value.status() == "StatusCode.NOT_FOUND"
    assert not client.is_model_ready("no_such_model")


@pytest.mark.parametrize(
    ("rpc", "request_type"),
    [
        ("TraceSetting", service_pb2.TraceSettingRequest),
    ],
)
def test_unsupported_rpcs_are_unimplemented(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, rpc: str, request_type: Any
) -> None:
    with pytest.raises(grpc.RpcError) as error:
        getattr(stub, rpc)(request_type())
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "is not supported by this server" in str(error.value.details())
