"""The lean HTTP/2 gRPC client of the load generator against grpcio's server (the reference stack):
statuses, messages, flow control for large requests, the server's concurrent-stream limit."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from tritonctl.perf.h2grpc import H2GrpcSender, request_header_block
from tritonctl.perf.transport import TransportError

pytestmark = pytest.mark.integration

FAIL = b"please fail"
MESSAGE = "bad input: 100% wrong, naïve ✓"


async def model_infer(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    if request == FAIL:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, MESSAGE)
    if request.startswith(b"sha:"):  # the rest must arrive intact: b"sha:" + digest + body
        digest, body = request[4:36], request[36:]
        if hashlib.sha256(body).digest() != digest:
            await context.abort(grpc.StatusCode.DATA_LOSS, "body corrupted")
    await asyncio.sleep(0.01)
    return b"x" * 100_000  # replies bigger than one frame and than the default window


async def with_server(options: list[tuple[str, Any]], body: Callable[[str], Awaitable[None]]) -> None:
    server = grpc.aio.server(options=options)
    handler: Any = grpc.unary_unary_rpc_method_handler(model_infer)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {"ModelInfer": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        await body(f"127.0.0.1:{port}")
    finally:
        await server.stop(None)


def test_statuses_and_messages() -> None:
    async def body(url: str) -> None:
        sender = H2GrpcSender(url)
        await sender.start()
        assert await sender.send(b"hello") is None
        assert await sender.send(FAIL) == f"INVALID_ARGUMENT: {MESSAGE}"
        assert await sender.send(b"again") is None  # the connection survives an error
        await sender.close()

    asyncio.run(with_server([], body))


def test_large_requests_respect_flow_control() -> None:
    body_bytes = bytes(range(256)) * 8192  # 2 MiB: many frames, far beyond the 64 KiB initial window
    payload = b"sha:" + hashlib.sha256(body_bytes).digest() + body_bytes

    async def body(url: str) -> None:
        sender = H2GrpcSender(url)
        await sender.start()
        outcomes = await asyncio.gather(*(sender.send(payload) for _ in range(4)))
        assert outcomes == [None] * 4
        await sender.close()

    options = [("grpc.max_receive_message_length", -1), ("grpc.http2.bdp_probe", 0)]
    asyncio.run(with_server(options, body))


def test_concurrent_calls_beyond_the_stream_limit_wait_their_turn() -> None:
    async def body(url: str) -> None:
        sender = H2GrpcSender(url)
        await sender.start()
        outcomes = await asyncio.gather(*(sender.send(b"n%d" % i) for i in range(20)))
        assert outcomes == [None] * 20
        await sender.close()

    asyncio.run(with_server([("grpc.max_concurrent_streams", 2)], body))


def test_unreachable_server() -> None:
    async def body() -> None:
        with pytest.raises(TransportError, match="cannot open an HTTP/2 connection"):
            await H2GrpcSender("127.0.0.1:1").start()

    asyncio.run(body())


def test_request_header_block_decodes_to_a_grpc_call() -> None:
    import hpack

    decoded = hpack.Decoder().decode(request_header_block("h:1", "/svc/Method"))
    headers = [(str(name), str(value)) for name, value in decoded]
    assert headers == [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/svc/Method"),
        (":authority", "h:1"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
