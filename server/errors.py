"""The one exception tree of the server and the toolkit.

    ServerError (status 500, INTERNAL)
    ├── ConfigError          400 INVALID_ARGUMENT  a config.pbtxt or server config is wrong
    ├── InvalidInput         400 INVALID_ARGUMENT  a request is malformed (shape, dtype, size, JSON ...)
    │   ├── RegionExists     400 ALREADY_EXISTS    a shared-memory region of that name is registered
    │   └── GpuRequired      400 FAILED_PRECONDITION CUDA shared memory on a server without a GPU
    ├── RegionNotFound       404 NOT_FOUND         no shared-memory region of that name
    ├── ModelNotFound        404 NOT_FOUND         no such model or version in the repository
    ├── ModelNotReady        503 UNAVAILABLE       known, but not loaded / loading / failed
    ├── QueueFull            503 UNAVAILABLE       "Exceeds maximum queue size"
    ├── ServerOverloaded     503 UNAVAILABLE       server-wide pending cap reached
    ├── RequestTimeout       503 UNAVAILABLE       queued too long (timeout_action REJECT), as Triton
    ├── RequestCancelled     499 CANCELLED         the client went away
    ├── Forbidden            403 PERMISSION_DENIED restricted API without its key
    ├── Unsupported          501 UNIMPLEMENTED     an endpoint or feature we do not offer
    ├── LoadError            400 INVALID_ARGUMENT  a model failed to load (reason in the message)
    ├── Unavailable          503 UNAVAILABLE       not possible now (shutting down, control mode forbids)
    ├── WorkerCrashed        500 INTERNAL          the instance process died with requests in flight
    ├── BackendError         500 INTERNAL          the model raised while executing
    └── RequestRescheduled   500 INTERNAL          not an answer: the model rescheduled the request

Each class knows its HTTP status and gRPC status code so the front ends map errors in one place.
Errors raised inside worker processes travel back as (class name, message) strings and are rebuilt
with `from_wire`, so an unpicklable exception can never break the server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import grpc

if TYPE_CHECKING:
    from server.repository.diagnostics import Diagnostic


class ServerError(Exception):
    """Base of every error the server and the toolkit raise on purpose."""

    http_status: ClassVar[int] = 500
    grpc_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        # An error a python model returned as its response (InferenceResponse(error=...)): Triton
        # 2.51 counts that request as a success in the statistics, not as a failure.
        self.model_response = False

    def __str__(self) -> str:
        return self.message

    def to_wire(self) -> tuple[str, str]:
        """(class name, message): what a worker sends back instead of a pickled exception."""
        return type(self).__name__, self.message


class ConfigError(ServerError):
    """A model configuration or the server configuration is invalid."""

    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, message: str, diagnostics: list[Diagnostic] | None = None) -> None:
        super().__init__(message)
        # Structured findings (file, line, code, fix) behind the message, for `tritonctl validate`.
        self.diagnostics: list[Diagnostic] = list(diagnostics or [])


class InvalidInput(ServerError):
    """The request is malformed: wrong shape, dtype, byte size, unknown tensor, bad JSON."""

    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class RegionExists(InvalidInput):
    """A shared-memory region of that name is already registered (Triton: ALREADY_EXISTS)."""

    grpc_code = grpc.StatusCode.ALREADY_EXISTS


class GpuRequired(InvalidInput):
    """CUDA shared memory asked of a server without a GPU or a CUDA IPC library."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


class RegionNotFound(ServerError):
    """No shared-memory region of that name is registered."""

    http_status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND


class ModelNotFound(ServerError):
    """The model or version is not in the repository."""

    http_status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND


class ModelNotReady(ServerError):
    """The model is known but not ready (loading, unloaded, failed, no live instance)."""

    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE


class QueueFull(ServerError):
    """The model's queue is at max_queue_size."""

    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE


class ServerOverloaded(ServerError):
    """The server-wide cap on pending requests or bytes is reached."""

    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE


class RequestTimeout(ServerError):
    """The request waited in the queue longer than its timeout ("Request timeout expired")."""

    # Triton answers a queue timeout with UNAVAILABLE (HTTP 503), not DEADLINE_EXCEEDED.
    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE


class RequestCancelled(ServerError):
    """The client cancelled or disconnected before an answer."""

    http_status = 499
    grpc_code = grpc.StatusCode.CANCELLED


class Forbidden(ServerError):
    """A restricted API was called without the required header."""

    http_status = 403
    grpc_code = grpc.StatusCode.PERMISSION_DENIED


class Unsupported(ServerError):
    """An endpoint or feature this server does not offer."""

    http_status = 501
    grpc_code = grpc.StatusCode.UNIMPLEMENTED


class DecoupledUnsupported(Unsupported):
    """A one-response route (HTTP infer, gRPC ModelInfer) called on a decoupled model; gRPC words
    it as Triton's ModelInfer does (service.grpc_status)."""

    GRPC_MESSAGE = "ModelInfer RPC doesn't support models with decoupled transaction policy"

    def __init__(self) -> None:
        super().__init__("HTTP end point doesn't support models with decoupled transaction policy")


class LoadError(ServerError):
    """A model version failed to load."""

    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class Unavailable(ServerError):
    """The server cannot do this now: it is shutting down, or the control mode forbids it."""

    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE


class WorkerCrashed(ServerError):
    """The instance process died while requests were in flight."""

    http_status = 500
    grpc_code = grpc.StatusCode.INTERNAL


class BackendError(ServerError):
    """The model raised while executing, or returned something unusable."""

    http_status = 500
    grpc_code = grpc.StatusCode.INTERNAL


class RequestRescheduled(ServerError):
    """Not an answer: an iterative sequence model released the request with RESCHEDULE (a python
    model's `set_release_flags`), so its sequence batcher runs it again. It travels back from the
    instance in the request's answer slot; only that batcher reads it (a client never should)."""


_BY_NAME: dict[str, type[ServerError]] = {
    cls.__name__: cls
    for cls in (
        ServerError,
        ConfigError,
        InvalidInput,
        ModelNotFound,
        ModelNotReady,
        QueueFull,
        ServerOverloaded,
        RequestTimeout,
        RequestCancelled,
        Forbidden,
        Unsupported,
        LoadError,
        Unavailable,
        WorkerCrashed,
        BackendError,
        RequestRescheduled,
    )
}


def from_wire(class_name: str, message: str) -> ServerError:
    """Rebuild an error sent as strings by a worker; unknown names become BackendError."""
    return _BY_NAME.get(class_name, BackendError)(message)
