"""set_release_flags in the python backend, in process: what execute() answers for a rescheduled
request (the RequestRescheduled marker, or Triton's errors), and pb_utils' own refusals."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from server.backends.base import BackendContext, Batch, Request, RequestControl, RequestInput
from server.backends.python import triton_python_backend_utils as pb_utils
from server.backends.python.backend import PythonBackend
from server.errors import BackendError, InvalidInput, RequestRescheduled, ServerError

# IN = 0: answer; 1: reschedule and return None; 2: reschedule and still answer; decoupled: send
# one response (the final too when IN = 3), reschedule unless IN = 0.
MODEL = """
import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(config)

    def execute(self, requests):
        responses = []
        for request in requests:
            value = int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()[0])
            response = pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([value], np.int32))])
            if value:
                request.set_release_flags(pb_utils.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE)
            if self.decoupled:
                final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL if value in (0, 3) else 0
                request.get_response_sender().send(response, flags=final)
            else:
                responses.append(None if value == 1 else response)
        return None if self.decoupled else responses
"""


def backend(tmp_path: Path, scheduling: str, decoupled: bool = False) -> PythonBackend:
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "model.py").write_text(textwrap.dedent(MODEL))
    text = f"""name: "m" backend: "python"
      input {{ name: "IN" data_type: TYPE_INT32 dims: [1] }}
      output {{ name: "OUT" data_type: TYPE_INT32 dims: [1] }}
      {scheduling}
      model_transaction_policy {{ decoupled: {str(decoupled).lower()} }}"""
    config = text_format.Parse(text, mc.ModelConfig())
    context = BackendContext("m", 1, tmp_path, config, "m_0", "KIND_CPU", None, {}, in_process=True)
    loaded = PythonBackend(context)
    loaded.load()
    return loaded


class Sent(RequestControl):
    """A decoupled request's control that keeps what was sent."""

    def __init__(self) -> None:
        super().__init__(streamed=True)
        self.items: list[tuple[Any, bool]] = []

    def send(self, outputs: Any, final: bool) -> None:
        super().send(outputs, final)
        self.items.append((outputs, final))


def run(loaded: PythonBackend, *values: int, streamed: bool = False) -> tuple[list[Any], list[Any]]:
    requests = []
    for value in values:
        data = memoryview(np.array([value], np.int32).tobytes())
        request = Request("", {"IN": RequestInput("IN", "INT32", [1], data)}, ["OUT"])
        request.control = Sent() if streamed else RequestControl()
        request.control.request = request
        requests.append(request)
    try:
        results: list[Any] = loaded.execute(Batch(requests, {}))
    except ServerError as error:
        results = [error] * len(requests)
    return results, [request.control for request in requests]


ITERATIVE = "sequence_batching { iterative_sequence: true }"


def test_a_rescheduled_request_answers_the_marker_and_the_others_their_responses(tmp_path: Path) -> None:
    results, _ = run(backend(tmp_path, ITERATIVE), 0, 1)
    assert int(results[0]["OUT"].array[0]) == 0
    assert isinstance(results[1], RequestRescheduled)


def test_a_response_for_a_rescheduled_request_fails_the_batch_with_tritons_words(tmp_path: Path) -> None:
    results, _ = run(backend(tmp_path, ITERATIVE), 0, 2)
    assert all(isinstance(result, BackendError) for result in results)
    assert str(results[0]) == (
        "Expected a None object in the execute function return list for reschduled request, found "
        "type '<class 'triton_python_backend_utils.InferenceResponse'>'."
    )


@pytest.mark.parametrize("scheduling", ["", "sequence_batching { direct { } }", "dynamic_batching { }"])
def test_without_iterative_sequences_a_reschedule_is_tritons_error(tmp_path: Path, scheduling: str) -> None:
    results, _ = run(backend(tmp_path, scheduling), 1)
    assert isinstance(results[0], InvalidInput)
    assert str(results[0]) == (
        "Request is released with TRITONSERVER_REQUEST_RELEASE_RESCHEDULE, while the model is not "
        "configured to handle such a flag."
    )


def test_decoupled_a_request_whose_final_went_out_is_done_rescheduled_or_not(tmp_path: Path) -> None:
    results, controls = run(backend(tmp_path, ITERATIVE, decoupled=True), 1, 3, streamed=True)
    assert isinstance(results[0], RequestRescheduled) and controls[0].items[0][1] is False
    assert not isinstance(results[1], ServerError) and controls[1].finished


def test_set_release_flags_refuses_other_flags_and_calls_after_execute_returned() -> None:
    request = pb_utils.InferenceRequest(inputs=[], requested_output_names=[])
    with pytest.raises(pb_utils.TritonModelException, match="flags must be TRITONSERVER_REQUEST_RELEASE_ALL"):
        request.set_release_flags(3)
    request.set_release_flags(pb_utils.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE)
    request.set_release_flags(pb_utils.TRITONSERVER_REQUEST_RELEASE_ALL)  # the last call wins
    assert request._release() is False
    with pytest.raises(pb_utils.TritonModelException, match="before execute\\(\\) returns"):
        request.set_release_flags(pb_utils.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE)


def test_the_sender_of_a_rescheduled_request_refuses_later_sends() -> None:
    control = Sent()
    request = pb_utils.InferenceRequest()
    request._control, request._convert = control, lambda response: {}
    sender = request.get_response_sender()
    request.set_release_flags(pb_utils.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE)
    sender.send(pb_utils.InferenceResponse())  # before execute returned: goes out
    assert request._release() is True
    with pytest.raises(pb_utils.TritonModelException, match="The request was rescheduled"):
        sender.send(pb_utils.InferenceResponse())
    assert len(control.items) == 1
