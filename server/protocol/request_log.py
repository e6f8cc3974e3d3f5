"""What `--log-verbose=1` logs: every HTTP and gRPC request as it arrives, what an inference asked for
(model, version, id, inputs with datatype and shape, requested outputs) and how it ended.

The front ends test one flag, `REQUEST_LOG.on`, before calling anything here, so at verbose level 0
the hot path pays a single attribute check. The flag follows the log settings (log_settings.py),
also when `POST /v2/logging` or gRPC `LogSettings` changes the verbose level at run time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from server.errors import ServerError
from server.vocabulary.types import InferenceRequest, InferenceResult

logger = logging.getLogger(__name__)


def _shape(shape: Any) -> str:
    return "[" + ",".join(str(int(dim)) for dim in shape) + "]"


def _error_text(error: BaseException) -> str:
    if isinstance(error, ServerError):
        return error.message
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


class RequestLog:
    """The verbose request log; `on` is True from verbose level 1."""

    __slots__ = ("on",)

    def __init__(self) -> None:
        self.on = False

    @staticmethod
    def request(protocol: str, what: str) -> None:
        """A request arrived: `HTTP request: POST /v2/...`, `gRPC request: ServerLive`."""
        logger.info("%s request: %s", protocol, what)

    @staticmethod
    def infer(protocol: str, request: InferenceRequest) -> str:
        """What an inference asks for; returns the tag its outcome is logged with."""
        tag = f"[request id: {request.id or '<id_unknown>'}] {protocol} '{request.model}'"
        tag += f" version {request.version or '(policy)'}"
        inputs = ", ".join(f"{t.name} {t.datatype} {_shape(t.shape)}" for t in request.inputs)
        outputs = ", ".join(output.name for output in request.outputs) or "(all)"
        parameters = f"; parameters {sorted(request.parameters)}" if request.parameters else ""
        logger.info("%s: inputs %s; requested outputs %s%s", tag, inputs, outputs, parameters)
        return tag

    @staticmethod
    def answered(tag: str, result: InferenceResult, status: str) -> None:
        outputs = ", ".join(f"{t.name} {t.datatype} {_shape(t.shape)}" for t in result.outputs)
        logger.info("%s: %s, version %s, outputs %s", tag, status, result.version, outputs or "(none)")

    def streamed(self, tag: str, response: InferenceResult | BaseException | None, final: bool) -> None:
        """One response of a decoupled stream (None: the empty final flag)."""
        status = "final response" if final else "response"
        if isinstance(response, BaseException):
            self.failed(tag, response, status)
        elif response is not None:
            self.answered(tag, response, status)
        else:
            logger.info("%s: final (no response)", tag)

    @staticmethod
    def failed(tag: str, error: BaseException, status: str) -> None:
        logger.info("%s: failed (%s): %s", tag, status, _error_text(error))

    def http_answer(self, tag: str, future: Any, status: int, body: bytes) -> None:
        """The outcome of an HTTP inference: its outputs, or its error as answered."""
        if status == 200 and future.done() and not future.cancelled() and future.exception() is None:
            self.answered(tag, future.result(), "200")
            return
        try:
            text = str(orjson.loads(body).get("error", ""))
        except (orjson.JSONDecodeError, AttributeError):
            text = body[:200].decode("utf-8", "replace")
        logger.info("%s: failed (%d): %s", tag, status, text)

    @staticmethod
    def refused(protocol: str, model: str, error: BaseException, status: str) -> None:
        """An inference refused before it was queued (undecodable, unknown model, invalid input);
        the error text names the request id where it is known, as Triton's do."""
        logger.info("%s '%s': refused (%s): %s", protocol, model, status, _error_text(error))


def grpc_status_name(error: BaseException) -> str:
    """The gRPC status a failure is answered with, by name (for the log)."""
    if isinstance(error, ServerError):
        return str(error.grpc_code.name)
    return "CANCELLED" if isinstance(error, asyncio.CancelledError) else "INTERNAL"


def logged_rpc(name: str, method: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[Any]]:
    """A unary RPC other than ModelInfer that logs its arrival and any failure when `on`."""

    async def rpc(request: Any) -> Any:
        if not REQUEST_LOG.on:
            return await method(request)
        REQUEST_LOG.request("gRPC", name)
        try:
            return await method(request)
        except BaseException as exc:
            logger.info("gRPC %s failed (%s): %s", name, grpc_status_name(exc), _error_text(exc))
            raise

    return rpc


#: The process's request log (front ends read `REQUEST_LOG.on`; log_settings.py sets it).
REQUEST_LOG = RequestLog()
