"""tritonctl's triton_python_backend_utils, in process (the worker round trip is in integration)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from server.backends.python import triton_python_backend_utils as pb_utils
from server.backends.python.backend import install_utils_module


def test_importable_under_tritons_module_name() -> None:
    install_utils_module()
    import triton_python_backend_utils  # type: ignore[import-not-found]

    assert triton_python_backend_utils is pb_utils
    assert sys.modules["triton_python_backend_utils"] is pb_utils


def test_tensor_basics() -> None:
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    tensor = pb_utils.Tensor("INPUT0", data)
    assert tensor.name() == "INPUT0"
    assert tensor.as_numpy() is data
    assert tensor.shape() == [2, 3]
    assert tensor.triton_dtype() == 11
    assert tensor.is_cpu()
    strings = pb_utils.Tensor("S", np.array(["a", "bc"]))
    assert strings.as_numpy().dtype == np.object_ and strings.triton_dtype() == 13


def test_dlpack_round_trip_with_numpy() -> None:
    data = np.arange(4, dtype=np.int32)
    copy = pb_utils.Tensor.from_dlpack("X", pb_utils.Tensor("X", data))
    np.testing.assert_array_equal(copy.as_numpy(), data)
    np.testing.assert_array_equal(np.from_dlpack(pb_utils.Tensor("X", data)), data)


def test_bf16_refuses_as_numpy_like_triton() -> None:
    tensor = pb_utils.Tensor("B", np.zeros(2, np.uint16), "BF16")
    assert tensor.triton_dtype() == 14
    with pytest.raises(pb_utils.TritonModelException, match="BF16"):
        tensor.as_numpy()


def test_requests_and_responses() -> None:
    a = pb_utils.Tensor("INPUT0", np.ones(2, np.float32))
    req = pb_utils.InferenceRequest(
        request_id="7", inputs=[a], requested_output_names=["OUTPUT0"], parameters={"k": 1}
    )
    assert pb_utils.get_input_tensor_by_name(req, "INPUT0") is a
    assert pb_utils.get_input_tensor_by_name(req, "NOPE") is None
    assert req.request_id() == "7" and req.requested_output_names() == ["OUTPUT0"]
    assert json.loads(req.parameters()) == {"k": 1}
    assert not req.is_cancelled()
    answer = req.exec()  # outside a model instance no server is there to call: an error response
    assert answer.has_error() and "not available" in answer.error().message()
    with pytest.raises(pb_utils.TritonModelException, match="response sender"):
        req.get_response_sender()
    out = pb_utils.Tensor("OUTPUT0", np.zeros(2, np.float32))
    response = pb_utils.InferenceResponse(output_tensors=[out], parameters={"p": "v"})
    assert pb_utils.get_output_tensor_by_name(response, "OUTPUT0") is out
    assert not response.has_error() and json.loads(response.parameters()) == {"p": "v"}
    failed = pb_utils.InferenceResponse(error=pb_utils.TritonError("nope", pb_utils.TritonError.NOT_FOUND))
    assert failed.has_error() and failed.error() is not None
    assert failed.error().message() == "nope" and failed.error().code() == pb_utils.TritonError.NOT_FOUND  # type: ignore[union-attr]
    assert pb_utils.TritonError("x").code() == pb_utils.TritonError.INTERNAL


def test_type_helpers() -> None:
    assert pb_utils.triton_string_to_numpy("TYPE_FP32") is np.float32
    assert pb_utils.triton_string_to_numpy("TYPE_STRING") is np.object_
    assert pb_utils.triton_to_numpy_type(8) is np.int32
    assert pb_utils.numpy_to_triton_type(np.float16) == 10
    assert pb_utils.numpy_to_triton_type(np.bytes_) == 13
    encoded = pb_utils.serialize_byte_tensor(np.array([b"ab", b""], dtype=np.object_))
    assert encoded is not None
    assert pb_utils.deserialize_bytes_tensor(encoded).tolist() == [b"ab", b""]


def test_config_lookups() -> None:
    config = {
        "input": [{"name": "A", "data_type": "TYPE_FP32"}],
        "output": [{"name": "B", "data_type": "TYPE_INT8"}],
    }
    assert pb_utils.get_input_config_by_name(config, "A") == {"name": "A", "data_type": "TYPE_FP32"}
    assert pb_utils.get_output_config_by_name(config, "B")["data_type"] == "TYPE_INT8"  # type: ignore[index]
    assert pb_utils.get_output_config_by_name(config, "A") is None
    assert not pb_utils.using_decoupled_model_transaction_policy(config)


def test_model_config_auto_complete_helpers() -> None:
    config = pb_utils.ModelConfig(
        {"name": "m", "input": [{"name": "A", "data_type": "TYPE_FP32", "dims": ["4"]}]}
    )
    config.add_input({"name": "A", "data_type": "TYPE_FP32", "dims": [4], "optional": True})
    config.add_input({"name": "B", "data_type": "TYPE_INT32", "dims": [1]})
    config.add_output({"name": "C", "data_type": "TYPE_FP32", "dims": [4]})
    config.set_max_batch_size(8)
    config.set_dynamic_batching()
    config.set_model_transaction_policy({"decoupled": False})
    result = config.as_dict()
    assert [i["name"] for i in result["input"]] == ["A", "B"] and result["input"][0]["optional"] is True
    assert result["output"][0]["name"] == "C" and result["max_batch_size"] == 8
    assert result["dynamic_batching"] == {} and result["model_transaction_policy"] == {"decoupled": False}
    with pytest.raises(ValueError, match="configuration specified dims"):
        config.add_input({"name": "A", "data_type": "TYPE_FP32", "dims": [5]})
    with pytest.raises(ValueError, match="max_batch_size 8"):
        config.set_max_batch_size(4)
    with pytest.raises(ValueError, match="unknown keys"):
        config.add_output({"name": "D", "shape": [1]})


def test_logger_levels(capsys: pytest.CaptureFixture[str]) -> None:
    pb_utils.Logger.verbose_enabled = False
    logger = pb_utils.Logger
    logger.log_info("hello")
    logger.log_warn("careful")
    logger.log("explicit", logger.ERROR)
    logger.log_verbose("hidden")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("I") and lines[0].endswith("] hello") and "test_python_utils.py:" in lines[0]
    assert lines[1].startswith("W") and lines[2].startswith("E")


def test_bls_exec_takes_a_model_name_read_from_a_bytes_input() -> None:
    """python_backend's examples/bls/sync_model.py passes `as_numpy()[0]` (bytes) as model_name."""
    from server.backends.python.streaming import bls_exec

    seen: dict[str, object] = {}

    class Client:
        def call(self, **call: object) -> tuple[int, object]:
            seen.update(call)

            class Answers:
                def get(self) -> object:
                    return ([("OUT", "FP32", [1], np.ones(1, np.float32).tobytes())], None, {}, True)

            return 1, Answers()

    request = pb_utils.InferenceRequest(model_name=b"add_sub", requested_output_names=["OUT"], inputs=[])  # type: ignore[arg-type]
    answer = bls_exec(request, pb_utils, Client(), decoupled=False)
    assert seen["model"] == "add_sub"
    assert pb_utils.get_output_tensor_by_name(answer, "OUT").as_numpy().tolist() == [1.0]


def test_bls_exec_carries_sequence_fields_and_accepts_preferred_memory() -> None:
    from server.backends.python.streaming import bls_exec

    seen: dict[str, object] = {}

    class Client:
        def call(self, **call: object) -> tuple[int, object]:
            seen.update(call)

            class Answers:
                def get(self) -> object:
                    return (None, ("ModelNotFound", "Request for unknown model"), {}, True)

            return 1, Answers()

    request = pb_utils.InferenceRequest(
        model_name="acc",
        requested_output_names=["OUT"],
        inputs=[],
        correlation_id=7,
        flags=pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START,
        preferred_memory=pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0),
        parameters={"k": "v"},
    )
    answer = bls_exec(request, pb_utils, Client(), decoupled=False)
    assert seen["parameters"] == {"k": "v", "sequence_id": 7, "sequence_start": True}
    assert answer.has_error() and answer.error().code() == pb_utils.TritonError.NOT_FOUND
