"""server/core/request_validator.py: the messages are those real Triton 2.51 answered for the same requests
(recorded with tests/tools/real_triton.py against python-backend add_sub / identity / strings models)."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from server.core.request_validator import RequestValidator, count_bytes_elements
from server.errors import InvalidInput
from server.vocabulary.dtypes import serialize_bytes
from server.vocabulary.types import InferenceRequest, RequestedOutput, Tensor

ADD_SUB = """
name: "add_sub"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
        { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
         { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""
NOBATCH = """
name: "nobatch"
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""
STRINGS = """
name: "strs"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_STRING dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_STRING dims: [ -1 ] } ]
"""
OPTIONAL = """
name: "opt"
input [ { name: "A" data_type: TYPE_INT32 dims: [ 1 ] },
        { name: "B" data_type: TYPE_INT32 dims: [ 1 ] optional: true } ]
output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""
PREFIX = "[request id: <id_unknown>] "


def validator(text: str) -> RequestValidator:
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    return RequestValidator(config.name, config)


def fp32(name: str, shape: list[int], data_shape: list[int] | None = None) -> Tensor:
    data = np.ones(data_shape or shape, np.float32).tobytes()
    return Tensor(name, "FP32", shape, data)


def request(
    model: str, *inputs: Tensor, outputs: tuple[str, ...] = (), request_id: str = ""
) -> InferenceRequest:
    return InferenceRequest(model, "", list(inputs), [RequestedOutput(o) for o in outputs], id=request_id)


def error_of(check: RequestValidator, req: InferenceRequest) -> str:
    with pytest.raises(InvalidInput) as info:
        check.validate(req)
    return info.value.message


def test_a_good_request_passes() -> None:
    validator(ADD_SUB).validate(request("add_sub", fp32("INPUT0", [2, 4]), fp32("INPUT1", [2, 4])))
    validator(NOBATCH).validate(request("nobatch", fp32("INPUT0", [4])))


def test_wrong_datatype() -> None:
    bad = Tensor("INPUT0", "FP64", [1, 4], np.ones((1, 4)).tobytes())
    assert error_of(validator(ADD_SUB), request("add_sub", bad, fp32("INPUT1", [1, 4]))) == (
        PREFIX + "inference input 'INPUT0' data-type is 'FP64', but model 'add_sub' expects 'FP32'"
    )


@pytest.mark.parametrize(("shape", "shown"), [([1, 5], "[1,5]"), ([1, 4, 1], "[1,4,1]")])
def test_wrong_shape_of_a_batching_model_carries_triton_note(shape: list[int], shown: str) -> None:
    message = error_of(validator(ADD_SUB), request("add_sub", fp32("INPUT0", shape), fp32("INPUT1", [1, 4])))
    assert message.startswith(
        PREFIX
        + f"unexpected shape for input 'INPUT0' for model 'add_sub'. Expected [-1,4], got {shown}. NOTE: "
    )
    assert message.endswith("See the model configuration docs for more info on max_batch_size.")


def test_wrong_shape_without_batching_ends_like_triton() -> None:
    assert error_of(validator(NOBATCH), request("nobatch", fp32("INPUT0", [1, 4]))) == (
        PREFIX + "unexpected shape for input 'INPUT0' for model 'nobatch'. Expected [4], got [1,4]. "
    )


def test_missing_input() -> None:
    assert error_of(validator(ADD_SUB), request("add_sub", fp32("INPUT0", [1, 4]))) == (
        PREFIX + "expected 2 inputs but got 1 inputs for model 'add_sub'. Got input(s) ['INPUT0'], "
        "but missing required input(s) ['INPUT1']. Please provide all required input(s)."
    )


def test_unknown_input_in_place_of_a_known_one() -> None:
    assert error_of(
        validator(ADD_SUB), request("add_sub", fp32("INPUT0", [1, 4]), fp32("INPUTX", [1, 4]))
    ) == ("unexpected inference input 'INPUTX' for model 'add_sub'")


def test_too_many_inputs() -> None:
    message = error_of(
        validator(ADD_SUB),
        request("add_sub", fp32("INPUT0", [1, 4]), fp32("INPUT1", [1, 4]), fp32("INPUTX", [1, 4])),
    )
    assert message == PREFIX + "expected 2 inputs but got 3 inputs for model 'add_sub'"


def test_optional_inputs_give_a_range_and_required_ones_are_still_checked() -> None:
    check = validator(OPTIONAL)
    check.validate(request("opt", Tensor("A", "INT32", [1], b"\0" * 4)))
    message = error_of(check, request("opt", Tensor("B", "INT32", [1], b"\0" * 4)))
    assert message == PREFIX + "missing required input(s) ['A'] for model 'opt'"
    message = error_of(check, request("opt"))
    assert message.startswith(
        PREFIX + "expected number of inputs between 1 and 2 but got 0 inputs for model 'opt'"
    )


def test_unknown_output() -> None:
    req = request("add_sub", fp32("INPUT0", [1, 4]), fp32("INPUT1", [1, 4]), outputs=("NOPE",))
    assert error_of(validator(ADD_SUB), req) == "unexpected inference output 'NOPE' for model 'add_sub'"


def test_batch_too_large_and_batch_mismatch() -> None:
    check = validator(ADD_SUB)
    assert error_of(check, request("add_sub", fp32("INPUT0", [9, 4]), fp32("INPUT1", [9, 4]))) == (
        PREFIX + "inference request batch-size must be <= 8 for 'add_sub'"
    )
    assert error_of(
        check, request("add_sub", fp32("INPUT0", [-1, 4], [1, 4]), fp32("INPUT1", [-1, 4], [1, 4]))
    ) == (PREFIX + "inference request batch-size must be <= 8 for 'add_sub'")
    # Triton names whichever input its map visits second; we name the first that disagrees.
    assert error_of(check, request("add_sub", fp32("INPUT0", [2, 4]), fp32("INPUT1", [1, 4]))) == (
        PREFIX + "input 'INPUT1' batch size does not match other inputs for 'add_sub'"
    )
    assert error_of(check, request("add_sub", fp32("INPUT0", []), fp32("INPUT1", [1, 4]))) == (
        PREFIX + "input 'INPUT0' has no shape but model requires batch dimension for 'add_sub'"
    )


def test_byte_size_mismatch_of_a_fixed_size_type() -> None:
    short = fp32("INPUT0", [1, 4], data_shape=[1, 5])
    assert error_of(validator(ADD_SUB), request("add_sub", short, fp32("INPUT1", [1, 4]))) == (
        PREFIX + "input byte size mismatch for input 'INPUT0' for model 'add_sub'. Expected 16, got 20"
    )


def test_string_element_count_both_ways() -> None:
    check = validator(STRINGS)
    more = Tensor("INPUT0", "BYTES", [1, 2], serialize_bytes([b"a", b"b", b"c"]))
    less = Tensor("INPUT0", "BYTES", [1, 2], serialize_bytes([b"a"]))
    assert error_of(check, request("strs", more)) == (
        PREFIX
        + "unexpected number of string elements 3 for inference input 'INPUT0' for model 'strs', expecting 2"
    )
    assert error_of(check, request("strs", less)) == (
        PREFIX + "expected 2 string elements for inference input 'INPUT0' for model 'strs', got 1"
    )
    check.validate(request("strs", Tensor("INPUT0", "BYTES", [1, 2], serialize_bytes([b"", b"xyz"]))))


def test_truncated_string_tensor_is_refused() -> None:
    truncated = Tensor("INPUT0", "BYTES", [1, 1], serialize_bytes([b"abcdef"])[:-2])
    assert "exceeds the end of the buffer" in error_of(validator(STRINGS), request("strs", truncated))


def test_unspecified_dimension_is_refused() -> None:
    message = error_of(validator(STRINGS), request("strs", Tensor("INPUT0", "BYTES", [1, -1], b"")))
    assert message == (
        PREFIX + "All input dimensions should be specified for input 'INPUT0' for model 'strs', got [1,-1]"
    )


def test_request_id_appears_in_the_prefix() -> None:
    bad = Tensor("INPUT0", "INT32", [1, 4], b"\0" * 16)
    message = error_of(validator(ADD_SUB), request("add_sub", bad, fp32("INPUT1", [1, 4]), request_id="r-7"))
    assert message.startswith("[request id: r-7] inference input 'INPUT0' data-type is 'INT32'")


@pytest.mark.parametrize("items", [[], [b""], [b"a", b"bc", b"\x00" * 300]])
def test_count_bytes_elements(items: list[bytes | str]) -> None:
    assert count_bytes_elements(serialize_bytes(items)) == len(items)
    if items:
        assert count_bytes_elements(serialize_bytes(items)[:-1] or b"\x01") is None
