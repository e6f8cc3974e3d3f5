"""The two async senders the load generator drives: one prebuilt request in, one outcome out.

`send(payload)` returns None on success or a short error text for a request the server refused;
it raises TransportError only when the connection itself fails. gRPC goes through h2grpc.py by
default, or grpc.aio with serializers switched off (`--grpc-client grpcio`); either way the payload
is an already serialized ModelInferRequest and the reply is never parsed (its status says enough).
HTTP is a lean keep-alive HTTP/1.1 client on asyncio + httptools: httpx/aiohttp spend more CPU per
request than the server under test, which would make the generator the bottleneck.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol, cast


class TransportError(Exception):
    """The connection itself failed (refused, reset): no answer from the server at all."""


class Sender(Protocol):
    async def start(self) -> None: ...
    async def send(self, payload: bytes) -> str | None: ...
    async def close(self) -> None: ...


class GrpcSender:
    """One HTTP/2 channel; every request of this process is multiplexed over it (like perf_analyzer)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._channel: Any = None
        self._call: Any = None

    async def start(self) -> None:
        import grpc

        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        self._channel = grpc.aio.insecure_channel(self._url, options=options)
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout=30)
        except asyncio.TimeoutError:
            raise TransportError(f"cannot connect to gRPC server at {self._url}") from None
        self._call = self._channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")

    async def send(self, payload: bytes) -> str | None:
        import grpc

        try:
            await self._call(payload)
        except grpc.aio.AioRpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
        return None

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()


class _HttpConnection(asyncio.Protocol):
    """One keep-alive connection: write a request, wait for one complete response."""

    def __init__(self) -> None:
        import httptools

        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[str | None] | None = None
        self._error_body: list[bytes] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(TransportError(f"connection lost: {exc or 'closed by the server'}"))

    def data_received(self, data: bytes) -> None:
        import httptools

        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.connection_lost(exc)
            if self._transport is not None:
                self._transport.close()

    # httptools callbacks
    def on_headers_complete(self) -> None:
        self._error_body = None if self._parser.get_status_code() == 200 else []

    def on_body(self, body: bytes) -> None:
        if self._error_body is not None:
            self._error_body.append(body)

    def on_message_complete(self) -> None:
        outcome: str | None = None
        if self._error_body is not None:
            text = b"".join(self._error_body).decode("utf-8", "replace")[:300]
            outcome = f"HTTP {self._parser.get_status_code()}: {text}"
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(outcome)

    async def request(self, payload: bytes) -> str | None:
        if self._transport is None or self.closed:
            raise TransportError("connection closed")
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(payload)
        return await self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class HttpSender:
    """A pool of keep-alive connections that grows to the number of requests in flight."""

    def __init__(self, url: str) -> None:
        host, _, port = url.rpartition(":")
        self._host = host.strip("[]")
        self._port = int(port)
        self._idle: list[_HttpConnection] = []
        self._all: set[_HttpConnection] = set()

    async def _connect(self) -> _HttpConnection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(_HttpConnection, self._host, self._port)
        except OSError as exc:
            raise TransportError(f"cannot connect to {self._host}:{self._port}: {exc}") from exc
        self._all.add(connection)
        return connection

    async def start(self) -> None:
        self._idle.append(await self._connect())

    async def send(self, payload: bytes) -> str | None:
        connection = self._idle.pop() if self._idle else await self._connect()
        try:
            outcome = await connection.request(payload)
        except TransportError:
            self._all.discard(connection)
            raise
        if connection.closed:
            self._all.discard(connection)
        else:
            self._idle.append(connection)
        return outcome

    async def close(self) -> None:
        for connection in self._all:
            with contextlib.suppress(Exception):
                connection.close()
        self._all.clear()
        self._idle.clear()


def make_sender(protocol: str, url: str, grpc_client: str = "raw") -> Sender:
    """HTTP: the keep-alive client above. gRPC: our lean HTTP/2 client (`raw`, see h2grpc.py) or grpcio."""
    if protocol == "http":
        return HttpSender(url)
    if grpc_client == "grpcio":
        return GrpcSender(url)
    from tritonctl.perf.h2grpc import H2GrpcSender

    return H2GrpcSender(url)
