"""Python models written the way Triton users write them (decoupled senders, BLS, cancellation,
custom metrics, logging), for the tests of issue #15. Each `write_*` makes `<repo>/<name>/`
with config.pbtxt and 1/model.py and returns the model directory.

    repeat       decoupled; IN (INT32 [1]) = n, DELAY_MS (INT32 [1]) optional: a thread started by
                 execute() sends OUT = 0..n-1 (one response each), then a flags-only final
    repeat_now   decoupled; sends OUT = 0..n-1 from execute itself, the last with the final flag;
                 n < 0: OUT = 0, then an error response "cannot repeat n times" (final);
                 n <= -100: OUT = 0, then the worker process exits (code 3)
    misuse       decoupled; IN = 1: send after the final flag; 2: a second final; 3: execute returns
                 a list; then IN = 0 answers OUT (BYTES) = the error texts Triton's API gave
    sender       default mode: OUT = IN through a response sender, execute() returns None
    watch        decoupled; sends one response, then waits until request.is_cancelled() and logs
                 "cancelled <request id>" (pb_utils.Logger)
    watch_plain  the same in default mode (no sender): returns once cancelled, logs the same
    bls          default mode; calls the model named by parameter TARGET (add_sub) with exec()
    bls_async    the same with `async def execute` and asyncio.gather of async_exec()
    bls_stream   default mode; exec(decoupled=True) on `repeat`: OUT = sum of the responses
    bls_cancel   default mode; exec(decoupled=True) on `watch`, cancel() after its first response,
                 OUT = the responses seen
    bls_probe    default mode; IN selects a failing call: 1 unknown model, 2 unknown output,
                 3 timeout on a slow model, 4 itself; OUT (BYTES) = the response's error message
    metrics      custom metrics: a counter (requests), a gauge (last IN), a histogram (IN), Logger lines
    ready_flag   is_ready() is False while the file named by parameter NOT_READY_FILE exists
    big          decoupled; IN = n responses OUT FP32 of 600k x (i + 1) elements, all equal to i
    fanout       decoupled; COUNT (parameter) responses OUTPUT0 = INPUT0 (FP32 [1]) from execute,
                 the last with the final flag (benchmark P5)
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

_HEADER = """\
import json
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils
"""

SOURCES = {
    "repeat": """
class TritonPythonModel:
    def initialize(self, args):
        self.threads = []

    def execute(self, requests):
        for request in requests:
            n = int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy().reshape(-1)[0])
            delay = pb_utils.get_input_tensor_by_name(request, "DELAY_MS")
            delay_s = float(delay.as_numpy().reshape(-1)[0]) / 1000 if delay is not None else 0.0
            thread = threading.Thread(target=self.send, args=(request.get_response_sender(), n, delay_s))
            thread.start()
            self.threads.append(thread)
        return None

    def send(self, sender, n, delay_s):
        for i in range(n):
            if delay_s:
                time.sleep(delay_s)
            sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([i], np.int32))]))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def finalize(self):
        for thread in self.threads:
            thread.join()
""",
    "repeat_now": """
class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            n = int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy().reshape(-1)[0])
            sender = request.get_response_sender()
            for i in range(n):
                flags = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL if i == n - 1 else 0
                out = pb_utils.Tensor("OUT", np.array([i], np.int32))
                sender.send(pb_utils.InferenceResponse([out]), flags)
            if n == 0:
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            elif n <= -100:  # one response, then the process dies
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([0], np.int32))]))
                import os

                os._exit(3)
            elif n < 0:  # one response, then an error
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([0], np.int32))]))
                error = pb_utils.TritonError(f"cannot repeat {n} times")
                final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
                sender.send(pb_utils.InferenceResponse(error=error), final)
        return None
""",
    "misuse": """
class TritonPythonModel:
    def initialize(self, args):
        self.errors = []

    def execute(self, requests):
        for request in requests:
            mode = int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy().reshape(-1)[0])
            sender = request.get_response_sender()
            if mode == 0:
                text = np.array([e.encode() for e in self.errors] or [b""], dtype=np.object_)
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", text)]),
                            pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                continue
            if mode == 3:
                return [pb_utils.InferenceResponse([]) for _ in requests]
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            try:
                if mode == 1:
                    out = pb_utils.Tensor("OUT", np.array([b"x"], np.object_))
                    sender.send(pb_utils.InferenceResponse([out]))
                else:
                    sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            except Exception as exc:
                self.errors.append(str(exc))
        return None
""",
    "sender": """
class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            sender = request.get_response_sender()
            sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", data)]),
                        pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
""",
    "watch": """
class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            pb_utils.Logger.log_info(f"started {request.request_id()}")
            sender = request.get_response_sender()
            sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([1], np.int32))]))
            threading.Thread(target=self.wait, args=(request, sender)).start()
        return None

    def wait(self, request, sender):
        deadline = time.monotonic() + 60
        while not request.is_cancelled() and time.monotonic() < deadline:
            time.sleep(0.005)
        pb_utils.Logger.log_info(f"cancelled {request.request_id()}: {sender.is_cancelled()}")
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
""",
    "watch_plain": """
class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            pb_utils.Logger.log_info(f"started {request.request_id()}")
        deadline = time.monotonic() + 60
        while not all(r.is_cancelled() for r in requests) and time.monotonic() < deadline:
            time.sleep(0.005)
        for request in requests:
            pb_utils.Logger.log_info(f"cancelled {request.request_id()}: {request.is_cancelled()}")
        error = pb_utils.TritonError("cancelled", pb_utils.TritonError.CANCELLED)
        return [pb_utils.InferenceResponse(error=error) for _ in requests]
""",
    "bls": """
class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.target = config["parameters"]["TARGET"]["string_value"]

    def execute(self, requests):
        responses = []
        for request in requests:
            call = pb_utils.InferenceRequest(
                model_name=self.target,
                requested_output_names=["OUTPUT0", "OUTPUT1"],
                inputs=[pb_utils.get_input_tensor_by_name(request, "INPUT0"),
                        pb_utils.get_input_tensor_by_name(request, "INPUT1")],
            )
            answer = call.exec()
            if answer.has_error():
                raise pb_utils.TritonModelException(answer.error().message())
            responses.append(pb_utils.InferenceResponse([
                pb_utils.get_output_tensor_by_name(answer, "OUTPUT0"),
                pb_utils.get_output_tensor_by_name(answer, "OUTPUT1"),
            ]))
        return responses
""",
    "bls_async": """
import asyncio


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.target = config["parameters"]["TARGET"]["string_value"]

    async def execute(self, requests):
        # the target batches: each call is one row of it
        def row(request, name):
            data = pb_utils.get_input_tensor_by_name(request, name).as_numpy()
            return pb_utils.Tensor(name, data.reshape(1, -1))

        calls = [
            pb_utils.InferenceRequest(
                model_name=self.target,
                requested_output_names=["OUTPUT0", "OUTPUT1"],
                inputs=[row(request, "INPUT0"), row(request, "INPUT1")],
            ).async_exec()
            for request in requests
        ]
        answers = await asyncio.gather(*calls)
        responses = []
        for answer in answers:
            if answer.has_error():
                raise pb_utils.TritonModelException(answer.error().message())
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor(name, pb_utils.get_output_tensor_by_name(answer, name).as_numpy().reshape(-1))
                for name in ("OUTPUT0", "OUTPUT1")
            ]))
        return responses
""",
    "bls_stream": """
class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            call = pb_utils.InferenceRequest(
                model_name="repeat",
                requested_output_names=["OUT"],
                inputs=[pb_utils.get_input_tensor_by_name(request, "IN")],
            )
            total, count = 0, 0
            for answer in call.exec(decoupled=True):
                if answer.has_error():
                    raise pb_utils.TritonModelException(answer.error().message())
                out = pb_utils.get_output_tensor_by_name(answer, "OUT")
                if out is not None:
                    total += int(out.as_numpy().sum())
                    count += 1
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUT", np.array([total, count], np.int32))
            ]))
        return responses
""",
    "bls_probe": """
class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            mode = int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy().reshape(-1)[0])
            data = np.zeros([4], np.float32)
            model, outputs, timeout, inputs = "add_sub", ["OUTPUT0"], 0, ["INPUT0", "INPUT1"]
            if mode == 1:
                model = "no_such_model"
            elif mode == 2:
                outputs = ["NOPE"]
            elif mode == 3:
                model, inputs, timeout = "slow", ["INPUT0"], 50_000
            elif mode == 4:
                model, inputs, outputs = "bls_probe", ["IN"], ["OUT"]
                data = np.array([0], np.int32)
            call = pb_utils.InferenceRequest(
                model_name=model,
                requested_output_names=outputs,
                inputs=[pb_utils.Tensor(name, data) for name in inputs],
                timeout=timeout,
            )
            answer = call.exec()
            text = answer.error().message() if answer.has_error() else "no error"
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUT", np.array([text.encode()], np.object_))
            ]))
        return responses
""",
    "metrics": """
class TritonPythonModel:
    def initialize(self, args):
        self.requests = pb_utils.MetricFamily(
            name="toy_requests_total", description="requests seen", kind=pb_utils.MetricFamily.COUNTER
        )
        self.last = pb_utils.MetricFamily(
            name="toy_last_value", description="the last IN", kind=pb_utils.MetricFamily.GAUGE
        )
        self.sizes = pb_utils.MetricFamily(
            name="toy_value", description="IN values", kind=pb_utils.MetricFamily.HISTOGRAM
        )
        labels = {"model": args["model_name"], "flavour": "toy"}
        self.counter = self.requests.Metric(labels=labels)
        self.gauge = self.last.Metric(labels=labels)
        self.histogram = self.sizes.Metric(labels=labels, buckets=[1.0, 10.0])
        self.errors = []
        for call in (lambda: self.counter.increment(-1), lambda: self.counter.set(1),
                     lambda: self.gauge.observe(1), lambda: self.histogram.value()):
            try:
                call()
            except Exception as exc:
                self.errors.append(type(exc).__name__)
        pb_utils.Logger.log_info(f"metric misuse errors: {self.errors}")
        pb_utils.Logger.log_warn("a warning from initialize")
        pb_utils.Logger.log_error("an error from initialize")
        pb_utils.Logger.log_verbose("a verbose line from initialize")

    def execute(self, requests):
        responses = []
        for request in requests:
            value = int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy().reshape(-1)[0])
            self.counter.increment(1)
            self.gauge.set(value)
            self.histogram.observe(value)
            pb_utils.Logger.log_info(
                f"request {request.request_id()} correlation {request.correlation_id()} "
                f"flags {request.flags()} timeout {request.timeout()}"
            )
            out = np.array([self.counter.value()], np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", out)]))
        return responses
""",
    "ready_flag": """
import os


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.flag = config["parameters"]["NOT_READY_FILE"]["string_value"]

    def is_ready(self):
        return not os.path.exists(self.flag)

    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.get_input_tensor_by_name(r, "IN")]) for r in requests]
""",
    "fanout": """
class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.count = int(config["parameters"]["COUNT"]["string_value"])

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            for i in range(self.count):
                flags = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL if i == self.count - 1 else 0
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", data)]), flags)
        return None
""",
    "bls_cancel": """
class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            call = pb_utils.InferenceRequest(
                model_name="watch",
                requested_output_names=["OUT"],
                inputs=[pb_utils.get_input_tensor_by_name(request, "IN")],
                request_id=request.request_id(),
            )
            answers = call.exec(decoupled=True)
            count = 0
            for answer in answers:
                if pb_utils.get_output_tensor_by_name(answer, "OUT") is not None:
                    count += 1
                    answers.cancel()  # the callee's is_cancelled() turns true; it sends its final
            out = pb_utils.Tensor("OUT", np.array([count], np.int32))
            responses.append(pb_utils.InferenceResponse([out]))
        return responses
""",
    "big": """
class TritonPythonModel:
    def execute(self, requests):
        for request in requests:
            n = int(pb_utils.get_input_tensor_by_name(request, "IN").as_numpy().reshape(-1)[0])
            sender = request.get_response_sender()
            for i in range(n):  # each larger than the ring's first size (1 MiB): the ring grows
                out = pb_utils.Tensor("OUT", np.full([600_000 * (i + 1)], i, np.float32))
                sender.send(pb_utils.InferenceResponse([out]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
""",
}

_IO = {  # name -> (inputs, outputs): (name, type, dims)
    "repeat": (
        [("IN", "TYPE_INT32", [1]), ("DELAY_MS", "TYPE_INT32", [1], True)],
        [("OUT", "TYPE_INT32", [1])],
    ),
    "repeat_now": ([("IN", "TYPE_INT32", [1])], [("OUT", "TYPE_INT32", [1])]),
    "misuse": ([("IN", "TYPE_INT32", [1])], [("OUT", "TYPE_STRING", [-1])]),
    "sender": ([("IN", "TYPE_FP32", [-1])], [("OUT", "TYPE_FP32", [-1])]),
    "watch": ([("IN", "TYPE_INT32", [1])], [("OUT", "TYPE_INT32", [1])]),
    "watch_plain": ([("IN", "TYPE_INT32", [1])], [("OUT", "TYPE_INT32", [1])]),
    "bls": (
        [("INPUT0", "TYPE_FP32", [-1]), ("INPUT1", "TYPE_FP32", [-1])],
        [("OUTPUT0", "TYPE_FP32", [-1]), ("OUTPUT1", "TYPE_FP32", [-1])],
    ),
    "bls_stream": ([("IN", "TYPE_INT32", [1])], [("OUT", "TYPE_INT32", [2])]),
    "bls_probe": ([("IN", "TYPE_INT32", [1])], [("OUT", "TYPE_STRING", [1])]),
    "metrics": ([("IN", "TYPE_INT32", [1])], [("OUT", "TYPE_FP32", [1])]),
    "ready_flag": ([("IN", "TYPE_INT32", [1])], [("IN", "TYPE_INT32", [1])]),
    "fanout": ([("INPUT0", "TYPE_FP32", [1])], [("OUTPUT0", "TYPE_FP32", [1])]),
    "bls_cancel": ([("IN", "TYPE_INT32", [1])], [("OUT", "TYPE_INT32", [1])]),
    "big": ([("IN", "TYPE_INT32", [1])], [("OUT", "TYPE_FP32", [-1])]),
}
_IO["bls_async"] = _IO["bls"]
DECOUPLED = {"repeat", "repeat_now", "misuse", "watch", "fanout", "big"}


def _tensors(kind: str, entries: list[tuple[Any, ...]]) -> str:
    parts = []
    for entry in entries:
        name, dtype, dims = entry[:3]
        optional = " optional: true" if len(entry) > 3 and entry[3] else ""
        parts.append(f'{{ name: "{name}" data_type: {dtype} dims: {dims}{optional} }}')
    return f"{kind} [ " + ", ".join(parts) + " ]\n"


def write_triton_model(
    repo: Path,
    name: str,
    kind: str,
    *,
    max_batch_size: int = 0,
    instance_count: int = 1,
    parameters: dict[str, str] | None = None,
    extra_config: str = "",
) -> Path:
    """One of the models above under `name` (TRITONCTL_INSTANCE_MODE goes in `parameters`)."""
    inputs, outputs = _IO[kind]
    config = f'name: "{name}"\nbackend: "python"\nmax_batch_size: {max_batch_size}\n'
    config += _tensors("input", inputs) + _tensors("output", outputs)
    config += f"instance_group [ {{ count: {instance_count} kind: KIND_CPU }} ]\n"
    if kind in DECOUPLED:
        config += "model_transaction_policy { decoupled: true }\n"
    for key, value in (parameters or {}).items():
        config += f'parameters {{ key: "{key}" value {{ string_value: "{value}" }} }}\n'
    config += extra_config
    model_dir = repo / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(config)
    (model_dir / "1" / "model.py").write_text(_HEADER + textwrap.dedent(SOURCES[kind]))
    return model_dir
