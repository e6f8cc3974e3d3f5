"""The python backend: runs a user's `model.py` (`class TritonPythonModel`) the way Triton does.

`initialize(args)` gets Triton's args keys; `execute(requests)` gets one pb_utils.InferenceRequest
per client request whose numeric input tensors are zero-copy numpy views of the shared-memory
arena (valid during `execute` only, as in Triton); `finalize()` runs at unload. An optional
`auto_complete_config` static method may complete the config before `initialize`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import sys
from pathlib import Path
from typing import Any

from server.backends.base import Backend, Batch, OutputArray, OutputsWithParameters, RequestOutputs
from server.backends.python.custom_metrics import MetricValues
from server.backends.python.imports import ModelImports
from server.backends.sequence_fields import pop_sequence_fields
from server.errors import (
    BackendError,
    InvalidInput,
    LoadError,
    ModelNotFound,
    ModelNotReady,
    RequestCancelled,
    RequestRescheduled,
    ServerError,
    Unsupported,
)

UTILS_MODULE = "triton_python_backend_utils"
_KIND_WORDS = {"KIND_CPU": "CPU", "KIND_GPU": "GPU", "KIND_MODEL": "MODEL"}


def install_utils_module() -> Any:
    """Make our pb_utils importable as `triton_python_backend_utils` (what Triton models import)."""
    from server.backends.python import triton_python_backend_utils as utils

    sys.modules.setdefault(UTILS_MODULE, utils)
    return utils


class PythonBackend(Backend):
    completed_config_json: str | None = None  # set when auto_complete_config changed the config
    reads_batch_inputs = False  # pb_utils requests carry each request's own input tensors
    async_execute = False

    def load(self) -> None:
        pb_utils = install_utils_module()
        self._pb = pb_utils
        pb_utils.Logger.verbose_enabled = self.context.log_verbose > 0
        path = self.context.model_file("model.py")
        if not path.is_file():
            raise LoadError(f"python model file '{path}' does not exist")
        # Models import their helper modules from beside model.py (see imports.py for in-process).
        self._imports = ModelImports(
            path.parent, in_process=self.context.in_process, instance_name=self.context.instance_name
        )
        try:
            with self._imports.scope():
                self._load_model(path, pb_utils)
        except BaseException:
            self._imports.release()
            raise

    def _load_model(self, path: Path, pb_utils: Any) -> None:
        module = self._imports.import_model(path)
        model_class = getattr(module, "TritonPythonModel", None)
        if model_class is None:
            raise LoadError(f"'{path}' does not define class TritonPythonModel")

        config_json = self._config_json()
        if self.context.auto_complete and hasattr(model_class, "auto_complete_config"):
            completed = model_class.auto_complete_config(
                pb_utils.ModelConfig(json.loads(json.dumps(config_json)))
            )
            completed_json = completed.as_dict() if completed is not None else config_json
            if completed_json != config_json:
                from google.protobuf import json_format

                config = json_format.ParseDict(completed_json, type(self.context.config)())
                self.context = dataclasses.replace(self.context, config=config)
                self.completed_config_json = json.dumps(completed_json)
                config_json = completed_json

        self.model = model_class()
        if callable(getattr(self.model, "is_ready", None)):  # python_backend #430: asked for readiness
            self.model_is_ready = self.model.is_ready
        self._decoupled = bool(self.context.config.model_transaction_policy.decoupled)
        # set_release_flags(RESCHEDULE) needs the sequence batcher's iterative sequences
        self._iterative = bool(self.context.config.sequence_batching.iterative_sequence)
        self._log_label = f"model '{self.context.model_name}'"
        # Custom metrics (custom_metrics.py): the instance's side link or channel connects them.
        self.metric_values = MetricValues(shared=not self.context.in_process)
        if self.context.in_process:
            self._upcall_source = lambda: self.upcalls
            pb_utils._UPCALLS.source = self._upcall_source
            pb_utils._UPCALLS.metrics = self.metric_values  # initialize() may make metrics
            pb_utils.Logger._local.model_label = self._log_label
        else:
            pb_utils._PROCESS_UPCALLS[:] = [lambda: self.upcalls, self.metric_values]
            pb_utils.Logger.model_label = self._log_label
        # An async execute() runs on an event loop of the backend's own (see _run).
        self.async_execute = inspect.iscoroutinefunction(self.model.execute)
        self._loop: asyncio.AbstractEventLoop | None = None
        args = {
            "model_config": json.dumps(config_json),
            "model_instance_kind": _KIND_WORDS.get(self.context.instance_kind, "CPU"),
            "model_instance_name": self.context.instance_name,
            # The worker sees only its own GPU (CUDA_VISIBLE_DEVICES), so the ordinal a model can use
            # is 0: `torch.device(f"cuda:{args['model_instance_device_id']}")` then finds the right GPU.
            "model_instance_device_id": "0",
            "model_repository": str(self.context.model_dir),
            "model_version": str(self.context.version),
            "model_name": self.context.model_name,
        }
        initialize = getattr(self.model, "initialize", None)
        if initialize is not None:
            self._run(initialize(args))

    def _config_json(self) -> dict[str, Any]:
        """The config as Triton hands it to models (the main process renders it; this is a fallback)."""
        if self.context.config_json:
            result: dict[str, Any] = json.loads(self.context.config_json)
            return result
        from google.protobuf import json_format

        return json_format.MessageToDict(self.context.config, preserving_proto_field_name=True)

    def execute(self, batch: Batch) -> list[RequestOutputs | ServerError]:
        pb = self._pb
        if self.context.in_process:  # models share this module: BLS calls find their instance per thread
            pb._UPCALLS.source = self._upcall_source
            pb._UPCALLS.metrics = self.metric_values
            pb.Logger._local.model_label = self._log_label
        requests = []
        convert = self._convert
        for request in batch.requests:
            tensors = [
                pb.Tensor(name, tensor.to_numpy(), "BF16" if tensor.datatype == "BF16" else None)
                for name, tensor in request.inputs.items()
            ]
            correlation_id, flags = pop_sequence_fields(request.parameters)
            requests.append(
                pb.InferenceRequest(
                    request_id=request.id,
                    correlation_id=correlation_id,
                    flags=flags,
                    timeout=_timeout_us(request.parameters),
                    inputs=tensors,
                    requested_output_names=list(request.requested_outputs),
                    model_name=self.context.model_name,
                    model_version=self.context.version,
                    parameters=request.parameters,
                )
            )
            requests[-1]._control = request.control
            requests[-1]._convert = convert
        try:
            responses = self.model.execute(requests)
            if self.async_execute:
                responses = self._run(responses)
        except pb.TritonModelException as exc:
            raise BackendError(str(exc)) from None
        finally:  # the release flags are read now (set_release_flags refuses from here on)
            again = [request._release() for request in requests]
        if self._decoupled:
            if responses is not None:
                raise BackendError(
                    f"Python model '{self.context.instance_name}' is using the decoupled mode and the "
                    "execute function must return None."
                )
            # its responses went out as sent; a request whose final went out is done, rescheduled or not
            return [
                self._rescheduled() if rescheduled and not _finished(request) else OutputsWithParameters()
                for request, rescheduled in zip(batch.requests, again, strict=True)
            ]
        if responses is None:  # default mode with response senders: each sent one response
            return [
                self._sent_response(request, rescheduled)
                for request, rescheduled in zip(batch.requests, again, strict=True)
            ]
        if not isinstance(responses, list | tuple) or len(responses) != len(requests):
            got = (
                "None"
                if responses is None
                else f"{len(responses)} responses"
                if hasattr(responses, "__len__")
                else type(responses).__name__
            )
            raise BackendError(
                f"execute() of model '{self.context.model_name}' must return one InferenceResponse "
                f"per request ({len(requests)}), got {got}"
            )
        for response, rescheduled in zip(responses, again, strict=True):
            if rescheduled and response is not None:  # Triton's words (typo included), for the batch
                raise BackendError(
                    "Expected a None object in the execute function return list for reschduled "
                    f"request, found type '{_type_words(response)}'."
                )
        return [
            self._rescheduled() if rescheduled else self._convert(response)
            for response, rescheduled in zip(responses, again, strict=True)
        ]

    def _rescheduled(self) -> ServerError:
        """A rescheduled request's answer: the marker its sequence batcher runs it again on, or
        Triton's error where the model's config does not allow rescheduling."""
        if self._iterative:
            return RequestRescheduled(f"request to model '{self.context.model_name}' was rescheduled")
        return InvalidInput(
            "Request is released with TRITONSERVER_REQUEST_RELEASE_RESCHEDULE, while the model is not "
            "configured to handle such a flag."
        )

    def _sent_response(self, request: Any, rescheduled: bool) -> RequestOutputs | ServerError:
        control = request.control
        if rescheduled:
            if control is None or control.sent is None:
                return self._rescheduled()
            return BackendError(
                f"a request to model '{self.context.model_name}' was rescheduled after its response "
                "sender sent its one response (non-decoupled models answer in their last execution only)"
            )
        if control is None or control.sent is None:
            return BackendError(
                f"execute() of model '{self.context.model_name}' returned None without sending a "
                "response for every request"
            )
        sent: RequestOutputs | ServerError = control.sent
        return sent

    def _convert(self, response: Any) -> RequestOutputs | ServerError:
        pb = self._pb
        if not isinstance(response, pb.InferenceResponse):
            return BackendError(
                f"execute() returned {type(response).__name__} where an InferenceResponse belongs"
            )
        error = response.error()
        if error is not None:
            answer = _error_from_code(error.message(), error.code())
            answer.model_response = True  # counted as a success, as Triton does (ServerError)
            return answer
        outputs = OutputsWithParameters()
        for tensor in response.output_tensors():
            array, datatype = tensor._output()
            outputs[tensor.name()] = OutputArray(array, datatype)
        parameters = response._parameter_dict()
        if parameters:
            outputs.parameters = parameters
        return outputs

    def _run(self, result: Any) -> Any:
        """Await what an async execute/initialize returned, on one loop kept for the worker's life."""
        if not inspect.isawaitable(result):
            return result
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(result)

    def unload(self) -> None:
        finalize = getattr(getattr(self, "model", None), "finalize", None)
        imports: ModelImports | None = getattr(self, "_imports", None)
        try:
            if finalize is not None:
                with imports.scope() if imports is not None else contextlib.nullcontext():
                    self._run(finalize())
        finally:
            loop = getattr(self, "_loop", None)
            if loop is not None:
                loop.close()
            if imports is not None:
                imports.release()


def _finished(request: Any) -> bool:
    """The request's final response was sent (decoupled)."""
    control = request.control
    return control is not None and bool(control.finished)


def _type_words(value: Any) -> str:
    """`str(type(value))` as the model sees it (our pb_utils under its Triton name)."""
    kind = type(value)
    module = UTILS_MODULE if kind.__module__.endswith("." + UTILS_MODULE) else kind.__module__
    name = kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
    return f"<class '{name}'>"


def _timeout_us(parameters: dict[str, Any]) -> int:
    """The request's `timeout` parameter (microseconds), what request.timeout() answers."""
    value = parameters.get("timeout") if parameters else None
    return value if isinstance(value, int) and value > 0 else 0


def _error_from_code(message: str, code: int) -> ServerError:
    """Map pb_utils.TritonError codes onto our tree (and so onto Triton's HTTP/gRPC statuses)."""
    by_code: dict[int, type[ServerError]] = {
        2: ModelNotFound,
        3: InvalidInput,
        4: ModelNotReady,
        5: Unsupported,
        7: RequestCancelled,
    }
    return by_code.get(code, BackendError)(message)
