"""tritonctl's `triton_python_backend_utils`: the API python-backend models import as `pb_utils`.

Written from the python_backend README (Usage, Error Handling, Interoperability, Logging); inside a
worker this module is importable under the top-level name `triton_python_backend_utils`, so a
`model.py` written for Triton runs unchanged. Response senders and BLS calls live in
streaming.py; `set_release_flags` (request rescheduling) is read by backend.py once execute()
returns.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import numpy as np

from server.backends.python import streaming as _streaming
from server.backends.python.custom_metrics import Metric, MetricFamily  # noqa: F401 - pb_utils API
from server.backends.python.streaming import (  # noqa: F401 - pb_utils API
    TRITONSERVER_MEMORY_CPU,
    TRITONSERVER_MEMORY_CPU_PINNED,
    TRITONSERVER_MEMORY_GPU,
    PreferredMemory,
)
from server.vocabulary.dtypes import deserialize_bytes, serialize_bytes

# Where this instance's BLS calls go: the backend sets it (per thread for in-process instances).
_UPCALLS = threading.local()
_PROCESS_UPCALLS: list[Any] = [None, None]  # the upcall client's source, the metric values


def _upcall_client() -> Any:
    source = getattr(_UPCALLS, "source", None) or _PROCESS_UPCALLS[0]
    return source() if callable(source) else None


def _metric_values() -> Any:
    """This instance's custom metric values (custom_metrics.MetricValues)."""
    return getattr(_UPCALLS, "metrics", None) or _PROCESS_UPCALLS[1]


# -- data types: TRITONSERVER_DataType numbers (the same order as model_config's TYPE_*) ----------

_TRITON_TO_NUMPY: dict[int, Any] = {
    1: np.bool_,
    2: np.uint8,
    3: np.uint16,
    4: np.uint32,
    5: np.uint64,
    6: np.int8,
    7: np.int16,
    8: np.int32,
    9: np.int64,
    10: np.float16,
    11: np.float32,
    12: np.float64,
    13: np.object_,
}
_WIRE_NAMES = {
    1: "BOOL",
    2: "UINT8",
    3: "UINT16",
    4: "UINT32",
    5: "UINT64",
    6: "INT8",
    7: "INT16",
    8: "INT32",
    9: "INT64",
    10: "FP16",
    11: "FP32",
    12: "FP64",
    13: "BYTES",
    14: "BF16",
}
_WIRE_TO_TRITON = {name: number for number, name in _WIRE_NAMES.items()}
TRITON_STRING_TO_NUMPY: dict[str, Any] = {
    "TYPE_BOOL": np.bool_,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}

TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2
TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
TRITONSERVER_REQUEST_RELEASE_ALL = _streaming.RELEASE_ALL
TRITONSERVER_REQUEST_RELEASE_RESCHEDULE = _RESCHEDULE = _streaming.RELEASE_RESCHEDULE


def triton_to_numpy_type(data_type: int) -> Any:
    return _TRITON_TO_NUMPY.get(data_type)


def numpy_to_triton_type(data_type: Any) -> int | None:
    dtype = np.dtype(data_type)
    if dtype.kind in ("O", "S", "U"):
        return 13
    for number, candidate in _TRITON_TO_NUMPY.items():
        if number != 13 and np.dtype(candidate) == dtype:
            return number
    return None


def triton_string_to_numpy(triton_type_string: str) -> Any:
    return TRITON_STRING_TO_NUMPY[triton_type_string]


def serialize_byte_tensor(input_tensor: np.ndarray[Any, Any]) -> np.ndarray[Any, Any] | None:
    """Object/bytes array -> its Triton wire encoding (4-byte little-endian length + bytes each)."""
    if input_tensor.size == 0:
        return None
    return np.frombuffer(serialize_bytes(input_tensor), dtype=np.uint8)


def deserialize_bytes_tensor(encoded_tensor: bytes | np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    raw = encoded_tensor.tobytes() if isinstance(encoded_tensor, np.ndarray) else encoded_tensor
    return deserialize_bytes(raw)


# -- errors ---------------------------------------------------------------------------------------


class TritonModelException(Exception):
    """Raise from initialize/execute/finalize to fail with this message."""


class TritonError(Exception):
    """An error for one response: `InferenceResponse(error=TritonError("...", code))`."""

    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self._message = message
        self._code = code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code


# -- tensors, requests, responses -----------------------------------------------------------------


class Tensor:
    """A named tensor; numeric data is a numpy array, BYTES an object array of bytes."""

    def __init__(self, name: str, tensor: Any, _datatype: str | None = None) -> None:
        if not isinstance(tensor, np.ndarray):
            tensor = np.asarray(tensor)
        if tensor.dtype.kind in ("S", "U"):
            tensor = tensor.astype(np.object_)
        self._name = name
        self._array: np.ndarray[Any, Any] = tensor
        self._datatype = _datatype  # "BF16" for bfloat16 data held as uint16 words

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray[Any, Any]:
        if self._datatype == "BF16":
            raise TritonModelException(
                f"tensor '{self._name}' is BF16, which numpy cannot hold; use to_dlpack() / from_dlpack()"
            )
        return self._array

    def triton_dtype(self) -> int:
        if self._datatype is not None:
            return _WIRE_TO_TRITON[self._datatype]
        return numpy_to_triton_type(self._array.dtype) or 0

    def shape(self) -> list[int]:
        return [int(dim) for dim in self._array.shape]

    def is_cpu(self) -> bool:
        return True

    def to_dlpack(self) -> Any:
        return self._dlpack_source().__dlpack__()

    def __dlpack__(self, stream: Any = None) -> Any:
        return self._dlpack_source().__dlpack__()

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)  # kDLCPU

    def _dlpack_source(self) -> Any:
        if self._datatype == "BF16":
            import torch

            return torch.from_numpy(self._array.view(np.int16)).view(torch.bfloat16)
        return self._array

    @staticmethod
    def from_dlpack(name: str, dlpack: Any) -> Tensor:
        """A tensor from a DLPack capsule or any object with `__dlpack__` (copied to CPU if needed)."""
        if type(dlpack).__name__ == "PyCapsule":
            import torch.utils.dlpack

            dlpack = torch.utils.dlpack.from_dlpack(dlpack)
        module = type(dlpack).__module__
        if module.startswith("torch"):
            tensor = dlpack.detach().cpu().contiguous()
            import torch

            if tensor.dtype == torch.bfloat16:
                return Tensor(name, tensor.view(torch.int16).numpy().view(np.uint16), "BF16")
            return Tensor(name, tensor.numpy())
        return Tensor(name, np.from_dlpack(dlpack))

    def _output(self) -> tuple[np.ndarray[Any, Any], str | None]:
        return self._array, self._datatype


class InferenceRequest:
    """One client request as `execute()` sees it (BLS construction is accepted, execution is not)."""

    def __init__(  # noqa: PLR0917 - Triton's constructor, positional order included
        self,
        request_id: str = "",
        correlation_id: int | str = 0,
        inputs: list[Tensor] | None = None,
        requested_output_names: list[str] | None = None,
        model_name: str = "",
        model_version: int = -1,
        flags: int = 0,
        timeout: int = 0,
        preferred_memory: Any = None,
        trace: Any = None,
        parameters: dict[str, Any] | str | None = None,
        request_timeout: int = 0,
    ) -> None:
        self._request_id = request_id
        self._correlation_id = correlation_id
        self._inputs = list(inputs or [])
        self._requested_output_names = list(requested_output_names or [])
        self._model_name = model_name
        self._model_version = model_version
        self._flags = flags
        self._timeout = timeout or request_timeout
        self._parameters = parameters  # rendered as JSON only when the model asks
        self._control: Any = None  # the executing instance's RequestControl (cancel flag, sender)
        self._convert: Any = None  # InferenceResponse -> what the control sends
        self._sender: Any = None
        self._release_flags = TRITONSERVER_REQUEST_RELEASE_ALL  # set_release_flags
        self._released = False  # execute() returned: the release flags are read (backend.py)

    def inputs(self) -> list[Tensor]:
        return self._inputs

    def requested_output_names(self) -> list[str]:
        return self._requested_output_names

    def request_id(self) -> str:
        return self._request_id

    def correlation_id(self) -> int | str:
        return self._correlation_id

    def model_name(self) -> str:
        return self._model_name

    def flags(self) -> int:
        return self._flags

    def timeout(self) -> int:
        return self._timeout

    def parameters(self) -> str:
        """The request's parameters as a JSON string (Triton's shape)."""
        return self._parameters if isinstance(self._parameters, str) else json.dumps(self._parameters or {})

    def is_cancelled(self) -> bool:
        return self._control is not None and bool(self._control.is_cancelled())

    def get_response_sender(self) -> Any:
        if self._control is None:
            raise TritonModelException("only a request given to execute() has a response sender")
        if self._sender is None:
            self._sender = _streaming.InferenceResponseSender(
                self._control, self._convert, TritonModelException
            )
            self._sender.rescheduled = self._released and self._release_flags == _RESCHEDULE
        return self._sender

    def _release(self) -> bool:
        """execute() returned (backend.py): True when the model rescheduled this request."""
        self._released = True
        if self._sender is not None:
            self._sender.rescheduled = self._release_flags == _RESCHEDULE
        return self._release_flags == _RESCHEDULE

    def set_release_flags(self, flags: int) -> None:
        """TRITONSERVER_REQUEST_RELEASE_RESCHEDULE: run this request again in a later execute() (the
        config needs `sequence_batching { iterative_sequence: true }`); _ALL (the default): done."""
        self._release_flags = _streaming.release_flags(flags, self._released, TritonModelException)

    def exec(self, decoupled: bool = False) -> Any:
        """Business logic scripting: run this request on the named model of the server."""
        return _streaming.bls_exec(self, sys.modules[__name__], _upcall_client(), decoupled)

    async def async_exec(self, decoupled: bool = False) -> Any:
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(None, self.exec, decoupled)


class InferenceResponse:
    def __init__(
        self,
        output_tensors: list[Tensor] | None = None,
        error: TritonError | None = None,
        parameters: dict[str, Any] | str | None = None,
    ) -> None:
        self._output_tensors = list(output_tensors or [])
        self._error = error
        self._parameters = parameters

    def output_tensors(self) -> list[Tensor]:
        return self._output_tensors

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error

    def parameters(self) -> str:
        return self._parameters if isinstance(self._parameters, str) else json.dumps(self._parameters or {})

    def _parameter_dict(self) -> dict[str, Any]:
        if isinstance(self._parameters, str):
            result: dict[str, Any] = json.loads(self._parameters)
            return result
        return self._parameters or {}


def get_input_tensor_by_name(inference_request: InferenceRequest, name: str) -> Tensor | None:
    for tensor in inference_request.inputs():
        if tensor.name() == name:
            return tensor
    return None


def get_output_tensor_by_name(inference_response: InferenceResponse, name: str) -> Tensor | None:
    for tensor in inference_response.output_tensors():
        if tensor.name() == name:
            return tensor
    return None


def get_input_config_by_name(model_config: dict[str, Any], name: str) -> dict[str, Any] | None:
    for entry in model_config.get("input", []):
        if entry.get("name") == name:
            return dict(entry)
    return None


def get_output_config_by_name(model_config: dict[str, Any], name: str) -> dict[str, Any] | None:
    for entry in model_config.get("output", []):
        if entry.get("name") == name:
            return dict(entry)
    return None


def using_decoupled_model_transaction_policy(model_config: dict[str, Any]) -> bool:
    return bool(model_config.get("model_transaction_policy", {}).get("decoupled", False))


# -- auto-complete ----------------------------------------------------------------------------------


class ModelConfig:
    """What `auto_complete_config(auto_complete_model_config)` receives and returns."""

    def __init__(self, model_config: dict[str, Any] | str) -> None:
        self._config: dict[str, Any] = (
            json.loads(model_config) if isinstance(model_config, str) else model_config
        )

    def as_dict(self) -> dict[str, Any]:
        return self._config

    def set_max_batch_size(self, max_batch_size: int) -> None:
        if not isinstance(max_batch_size, int) or max_batch_size < 0:
            raise ValueError(f"max_batch_size must be a non-negative integer, not {max_batch_size!r}")
        current = int(self._config.get("max_batch_size", 0))
        if current not in (0, max_batch_size):
            raise ValueError(
                f"configuration specified max_batch_size {current}, but auto-complete config tries to set it "
                f"to {max_batch_size}"
            )
        self._config["max_batch_size"] = max_batch_size

    def set_dynamic_batching(self) -> None:
        self._config.setdefault("dynamic_batching", {})

    def add_input(self, input: dict[str, Any]) -> None:
        self._add_tensor("input", input)

    def add_output(self, output: dict[str, Any]) -> None:
        self._add_tensor("output", output)

    def set_model_transaction_policy(self, transaction_policy_dict: dict[str, Any]) -> None:
        unknown = set(transaction_policy_dict) - {"decoupled"}
        if unknown:
            raise ValueError(f"model transaction policy does not accept {sorted(unknown)}")
        self._config.setdefault("model_transaction_policy", {}).update(transaction_policy_dict)

    def _add_tensor(self, kind: str, tensor: dict[str, Any]) -> None:
        if not isinstance(tensor, dict) or "name" not in tensor:
            raise ValueError(f"model {kind} must be a dict with a 'name', got {tensor!r}")
        allowed = {"name", "data_type", "dims", "optional", "reshape", "is_shape_tensor", "format"}
        unknown = set(tensor) - allowed
        if unknown:
            raise ValueError(f"model {kind} '{tensor['name']}' has unknown keys {sorted(unknown)}")
        entries: list[dict[str, Any]] = self._config.setdefault(kind, [])
        for existing in entries:
            if existing.get("name") != tensor["name"]:
                continue
            for key in ("data_type", "dims"):
                if (
                    key in tensor
                    and key in existing
                    and _normalized(existing[key]) != _normalized(tensor[key])
                ):
                    raise ValueError(
                        f"model {kind} '{tensor['name']}': configuration specified {key} {existing[key]}, "
                        f"but auto-complete config tries to set {tensor[key]}"
                    )
            for key, value in tensor.items():
                existing.setdefault(key, value)
            return
        entries.append(dict(tensor))


def _normalized(value: Any) -> Any:
    return [int(v) for v in value] if isinstance(value, list) else value


# -- logging ----------------------------------------------------------------------------------------


class Logger:
    """`pb_utils.Logger.log_info("...")`: lines on the worker's stderr, which the server log shows."""

    INFO = 0
    WARNING = 1
    ERROR = 2
    VERBOSE = 3

    verbose_enabled = False  # set by the worker from --log-verbose
    model_label = ""  # "model 'name'": set by the backend (per thread for in-process instances)
    _local = threading.local()
    _LETTERS = {INFO: "I", WARNING: "W", ERROR: "E", VERBOSE: "V"}

    @classmethod
    def log(cls, message: str, level: int = INFO) -> None:
        if level == cls.VERBOSE and not cls.verbose_enabled:
            return
        stamp = time.strftime("%m%d %H:%M:%S")
        label = getattr(cls._local, "model_label", "") or cls.model_label
        origin = f"{cls._origin()} {label}" if label else cls._origin()
        sys.stderr.write(f"{cls._LETTERS.get(level, 'I')}{stamp} {origin}] {message}\n")
        sys.stderr.flush()

    @staticmethod
    def _origin() -> str:
        frame = sys._getframe(1)
        while frame.f_back is not None and frame.f_code.co_filename == __file__:
            frame = frame.f_back
        return f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno}"

    @classmethod
    def log_info(cls, message: str) -> None:
        cls.log(message, cls.INFO)

    @classmethod
    def log_warn(cls, message: str) -> None:
        cls.log(message, cls.WARNING)

    @classmethod
    def log_error(cls, message: str) -> None:
        cls.log(message, cls.ERROR)

    @classmethod
    def log_verbose(cls, message: str) -> None:
        cls.log(message, cls.VERBOSE)
