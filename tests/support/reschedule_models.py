"""Python models that reschedule their requests, written the way Triton's python_backend README
("Request Rescheduling") writes them, for the tests of issue #15. `write_reschedule_model(repo,
name, kind, ...)` makes `<repo>/<name>/` with config.pbtxt and 1/model.py.

Every kind takes IN (INT32 [1]; [1, 1] with max_batch_size > 0) and keeps its state per
`request.correlation_id()`, so a request run with another's id, or told START twice, answers an
error response ("state lost ...").

    countdown         non-decoupled, iterative: IN = n executions; reschedules the request (None in
                      the returned list) until its n-th execution, which answers OUT = n,
                      CORRID = its correlation id, MAX_BATCH = the most requests any of its
                      executions held (continuous batching), FLAGS = the flags of its executions
                      as digits (START = 1 on the first, 0 after: "1000" for n = 4)
    countdown_stream  decoupled, iterative (the README's example, per correlation id): each
                      execution sends OUT = executions still to come and MAX_BATCH; reschedules
                      until OUT = 0, sent with the final flag
    wrong_return      non-decoupled: reschedules and still returns a response (Triton's error)
    bad_flags         non-decoupled: set_release_flags(IN); answers OUT = IN when that was allowed
    bls               non-decoupled, no sequence batching: IN = n; calls the model named by
                      parameter COUNTDOWN with exec() and the one named by STREAM with
                      exec(decoupled=True): OUT = the first's OUT, COUNT = the second's responses
                      with outputs (n)
    reschedule_once   non-decoupled or decoupled (the `decoupled` option): reschedules every
                      request on its first execution (for configs that do not allow it)
"""

from __future__ import annotations

import textwrap
from pathlib import Path

_HEADER = """\
import numpy as np
import triton_python_backend_utils as pb_utils

START = pb_utils.TRITONSERVER_REQUEST_FLAG_SEQUENCE_START
RESCHEDULE = pb_utils.TRITONSERVER_REQUEST_RELEASE_RESCHEDULE


def first_value(request, name="IN"):
    return int(pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1)[0])


def shaped(value, batched, dtype=np.int32):
    array = np.array([value], dtype)
    return array.reshape(1, 1) if batched else array
"""

SOURCES = {
    "countdown": """
import json


class TritonPythonModel:
    def initialize(self, args):
        self.batched = json.loads(args["model_config"]).get("max_batch_size", 0) > 0
        self.state = {}  # correlation id -> [executions left, executions done, max batch, flags]

    def execute(self, requests):
        responses = []
        for request in requests:
            cid, start = request.correlation_id(), bool(request.flags() & START)
            if start == (cid in self.state) or not cid:
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"state lost: id {cid!r} flags {request.flags()}")))
                self.state.pop(cid, None)
                continue
            if start:
                self.state[cid] = [first_value(request), 0, 0, ""]
            state = self.state[cid]
            state[0] -= 1
            state[1] += 1
            state[2] = max(state[2], len(requests))
            state[3] += str(request.flags())
            if state[0] > 0:
                request.set_release_flags(RESCHEDULE)
                responses.append(None)
                continue
            del self.state[cid]
            outputs = [
                pb_utils.Tensor("OUT", shaped(state[1], self.batched)),
                pb_utils.Tensor("CORRID", shaped(cid, self.batched, np.uint64)),
                pb_utils.Tensor("MAX_BATCH", shaped(state[2], self.batched)),
                pb_utils.Tensor("FLAGS", shaped(state[3].encode(), self.batched, np.object_)),
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses
""",
    "countdown_stream": """
import json


class TritonPythonModel:
    def initialize(self, args):
        self.batched = json.loads(args["model_config"]).get("max_batch_size", 0) > 0
        self.remaining = {}  # correlation id -> responses still to send

    def execute(self, requests):
        for request in requests:
            cid, start = request.correlation_id(), bool(request.flags() & START)
            sender = request.get_response_sender()
            if start == (cid in self.remaining):
                error = pb_utils.TritonError(f"state lost: id {cid!r} flags {request.flags()}")
                sender.send(pb_utils.InferenceResponse(error=error),
                            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                continue
            if start:
                self.remaining[cid] = first_value(request)
            self.remaining[cid] -= 1
            left = self.remaining[cid]
            response = pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("OUT", shaped(left, self.batched)),
                pb_utils.Tensor("MAX_BATCH", shaped(len(requests), self.batched)),
            ])
            if left <= 0:
                del self.remaining[cid]
                sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            else:
                request.set_release_flags(RESCHEDULE)
                sender.send(response)
        return None
""",
    "wrong_return": """
class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            request.set_release_flags(RESCHEDULE)
            out = pb_utils.Tensor("OUT", pb_utils.get_input_tensor_by_name(request, "IN").as_numpy())
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
""",
    "bad_flags": """
class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            request.set_release_flags(first_value(request))
            out = pb_utils.Tensor("OUT", pb_utils.get_input_tensor_by_name(request, "IN").as_numpy())
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
""",
    "bls": """
import json


class TritonPythonModel:
    def initialize(self, args):
        parameters = json.loads(args["model_config"])["parameters"]
        self.countdown = parameters["COUNTDOWN"]["string_value"]
        self.stream = parameters["STREAM"]["string_value"]

    def execute(self, requests):
        responses = []
        for request in requests:
            value = pb_utils.get_input_tensor_by_name(request, "IN")
            answer = pb_utils.InferenceRequest(
                model_name=self.countdown, inputs=[value], requested_output_names=["OUT"]
            ).exec()
            if answer.has_error():
                responses.append(pb_utils.InferenceResponse(error=answer.error()))
                continue
            streamed = pb_utils.InferenceRequest(
                model_name=self.stream, inputs=[value], requested_output_names=["OUT"]
            ).exec(decoupled=True)
            count = sum(1 for response in streamed if response.output_tensors())
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.get_output_tensor_by_name(answer, "OUT"),
                pb_utils.Tensor("COUNT", np.array([count], np.int32)),
            ]))
        return responses
""",
    "reschedule_once": """
import json


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.decoupled = pb_utils.using_decoupled_model_transaction_policy(config)
        self.seen = set()

    def execute(self, requests):
        responses = []
        for request in requests:
            key = request.request_id()
            out = pb_utils.Tensor("OUT", pb_utils.get_input_tensor_by_name(request, "IN").as_numpy())
            response = pb_utils.InferenceResponse(output_tensors=[out])
            if key not in self.seen:
                self.seen.add(key)
                request.set_release_flags(RESCHEDULE)
                if self.decoupled:
                    request.get_response_sender().send(response)
                responses.append(None)
            elif self.decoupled:
                final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
                request.get_response_sender().send(response, flags=final)
            else:
                responses.append(response)
        return None if self.decoupled else responses
""",
}

_OUTPUTS = {
    "countdown": [("OUT", "TYPE_INT32"), ("CORRID", "TYPE_UINT64"), ("MAX_BATCH", "TYPE_INT32"),
                  ("FLAGS", "TYPE_STRING")],
    "countdown_stream": [("OUT", "TYPE_INT32"), ("MAX_BATCH", "TYPE_INT32")],
    "bls": [("OUT", "TYPE_INT32"), ("COUNT", "TYPE_INT32")],
}  # fmt: skip
ITERATIVE = "sequence_batching { iterative_sequence: true }\n"


def write_reschedule_model(
    repo: Path,
    name: str,
    kind: str,
    *,
    max_batch_size: int = 0,
    decoupled: bool | None = None,
    scheduling: str = ITERATIVE,
    mode: str = "",
    parameters: dict[str, str] | None = None,
) -> Path:
    """One of the models above under `name`; `scheduling` is its config's scheduler block
    (iterative sequence batching by default), `mode` its TRITONCTL_INSTANCE_MODE."""
    parameters = dict(parameters or {})
    if mode:
        parameters["TRITONCTL_INSTANCE_MODE"] = mode
    if decoupled is None:
        decoupled = kind == "countdown_stream"
    config = f'name: "{name}"\nbackend: "python"\nmax_batch_size: {max_batch_size}\n'
    config += 'input [ { name: "IN" data_type: TYPE_INT32 dims: [1] } ]\n'
    outputs = _OUTPUTS.get(kind, [("OUT", "TYPE_INT32")])
    entries = ", ".join(f'{{ name: "{o}" data_type: {t} dims: [1] }}' for o, t in outputs)
    config += f"output [ {entries} ]\n"
    config += "instance_group [ { count: 1 kind: KIND_CPU } ]\n" + scheduling
    if decoupled:
        config += "model_transaction_policy { decoupled: true }\n"
    for key, value in parameters.items():
        config += f'parameters {{ key: "{key}" value {{ string_value: "{value}" }} }}\n'
    model_dir = repo / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(config)
    (model_dir / "1" / "model.py").write_text(_HEADER + textwrap.dedent(SOURCES[kind]))
    return model_dir
