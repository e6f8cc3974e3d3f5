"""Serves `InferenceRpcs` (service.py) on grpc.aio, behind two guards that every RPC passes first.

- Malformed protobuf (garbage, truncated fields, strings that are not UTF-8) answers
  INVALID_ARGUMENT with the parser's message; grpc's own handling would say UNKNOWN.
- Restricted groups (`--grpc-restricted-protocol`) answer UNAVAILABLE with Triton's message when
  the caller's metadata lacks the `triton-grpc-protocol-<key>` header with the exact value.

The handler table is the one tritonclient's generated `add_GRPCInferenceServiceServicer_to_server`
builds (captured, not copied), so every RPC of the service is covered; the inference RPCs, which
answer serialized chunks (service.PRESERIALIZED), get a serializer that only joins them. An RPC that
raises answers its status (`grpc_status`) by setting code and details and returning an empty message, which is
cheaper than `context.abort` (no exception unwinds through grpc).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from tritonclient.grpc import service_pb2_grpc

from server.protocol.grpc.codec import Chunk
from server.protocol.grpc.service import METHODS, PRESERIALIZED, InferenceRpcs, grpc_status
from server.protocol.restricted import GRPC_CATEGORIES, grpc_denial_message
from server.vocabulary.restrictions import Restriction, Restrictions

Context = grpc.aio.ServicerContext[Any, Any]
_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}


class Malformed:
    """What the guarded deserializer hands over instead of raising on bad bytes."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def _lenient(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def guarded(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # DecodeError, or anything a hostile message provokes
            return Malformed(f"failed to parse the request message: {exc}")

    return guarded


def _join(chunks: list[Chunk]) -> bytes:
    return b"".join(chunks)


def _allowed(context: Context, restriction: Restriction) -> bool:
    key = restriction.key
    return any(
        name == key and value == restriction.value for name, value in context.invocation_metadata() or ()
    )


def _guard_unary(behavior: Any, restriction: Restriction | None, empty: Any) -> Any:
    async def guarded(request: Any, context: Context) -> Any:
        if restriction is not None and not _allowed(context, restriction):
            await context.abort(grpc.StatusCode.UNAVAILABLE, grpc_denial_message(restriction))
        if type(request) is Malformed:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        try:
            return await behavior(request)
        except Exception as exc:
            code, message = grpc_status(exc)
            context.set_code(_STATUS_CODES[code])
            context.set_details(message)
            return empty

    return guarded


def _guard_stream(behavior: Any, restriction: Restriction | None) -> Any:
    async def guarded(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
        if restriction is not None and not _allowed(context, restriction):
            await context.abort(grpc.StatusCode.UNAVAILABLE, grpc_denial_message(restriction))
        malformed: list[Malformed] = []

        async def well_formed() -> AsyncIterator[Any]:
            async for request in requests:
                if type(request) is Malformed:
                    malformed.append(request)  # ends the input: answers so far still go out
                    return
                yield request

        async for response in behavior(well_formed()):
            yield response
        if malformed:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, malformed[0].message)

    return guarded


class _Capture:
    """Stands in for a grpc server while the generated code registers its handler table."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self.service, self.handlers = service, dict(handlers)


def add_guarded_service(server: grpc.aio.Server, rpcs: InferenceRpcs, restrictions: Restrictions) -> None:
    """Register every RPC of `rpcs` on `server` behind the guards."""
    capture = _Capture()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(rpcs, capture)
    guarded: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for name, handler in capture.handlers.items():
        category = GRPC_CATEGORIES.get(name)
        restriction = restrictions.get(category) if category is not None else None
        deserializer = _lenient(handler.request_deserializer)
        preserialized = name in PRESERIALIZED
        serializer = _join if preserialized else handler.response_serializer
        if handler.stream_stream is not None:
            guarded[name] = handler._replace(  # type: ignore[attr-defined]
                request_deserializer=deserializer,
                response_serializer=serializer,
                stream_stream=_guard_stream(handler.stream_stream, restriction),
            )
        elif handler.unary_unary is not None:
            empty = [] if preserialized else METHODS[name].response_type()
            guarded[name] = handler._replace(  # type: ignore[attr-defined]
                request_deserializer=deserializer,
                response_serializer=serializer,
                unary_unary=_guard_unary(handler.unary_unary, restriction, empty),
            )
        else:  # the service has no other shapes today; keep any new one as generated
            guarded[name] = handler
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(capture.service, guarded),))
    server.add_registered_method_handlers(capture.service, guarded)
