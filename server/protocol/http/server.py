"""HTTP/1.1 front end: a raw asyncio Protocol with the httptools parser, serving `HttpApp`.

Chosen over starlette-on-uvicorn by measurement (benchmarks/RESULTS.md, "HTTP stack"): the ASGI
layers cost more per request than the whole inference path. Keep-alive and pipelining are
supported (responses go out in request order, one request of a connection at a time); the body
limit (`--http-max-input-size`) is checked from Content-Length before any body byte is buffered,
and again while a chunked body streams in; a refused connection is drained, not reset (linger.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol, cast

import httptools

from server.protocol.api import DataPlaneApi
from server.protocol.http.linger import Linger, linger_budget
from server.protocol.http.routes import HttpApp, HttpRequest, HttpResponse, InferCall, error_response
from server.vocabulary.eager import on_done
from server.vocabulary.restrictions import parse_restrictions
from server.vocabulary.shm_regions import RegionTable

logger = logging.getLogger(__name__)

# More pipelined requests than this on one connection pause reading until the queue drains.
_MAX_PIPELINED = 32
# Binary outputs up to this size are joined with the header into one write.
_JOIN_LIMIT = 64 * 1024
# Request line plus headers; httptools itself has no limit, so a client could grow them forever.
MAX_HEAD_SIZE = 64 * 1024


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")


_STATUS_LINES = {status.value: _status_line(status.value) for status in http.HTTPStatus}


def _too_large(size: int, limit: int) -> HttpResponse:
    return error_response(
        400,
        f"request body of {size} bytes exceeds the maximum allowed size of {limit} bytes; "
        "use --http-max-input-size to raise the limit",
    )


def _overloaded(limit: int) -> HttpResponse:
    return error_response(
        503,
        f"Server overloaded: request bodies held by the server would exceed {limit} bytes "
        "(--max-pending-bytes); retry later",
    )


class BodyBudget:
    """Bytes of request bodies all connections hold (received, queued or being answered), capped
    by --max-pending-bytes (0: no cap) so many slow or large uploads cannot exhaust memory."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def exceeded_by(self, size: int) -> bool:
        return bool(self.limit) and self.used + size > self.limit


@dataclass(slots=True)
class _Pending:
    """One parsed request (or a ready-made error answer), waiting for its turn on the connection."""

    request: HttpRequest | None
    keep_alive: bool
    response: HttpResponse | None = None
    size: int = 0  # body bytes counted in the BodyBudget, released once answered


class HttpConnection(asyncio.Protocol):
    """One client connection; httptools calls the on_* methods while `data_received` feeds it."""

    def __init__(
        self, app: HttpApp, connections: set[HttpConnection], budget: BodyBudget | None = None
    ) -> None:
        self._app = app
        self._limit = app.max_input_size
        self._connections = connections
        self._budget = budget or BodyBudget(0)
        self._counted = 0  # bytes this connection holds in the budget (all released when it closes)
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._queue: deque[_Pending] = deque()
        self._worker: asyncio.Future[Any] | None = None  # the queue's task, or an inference's future
        self._writable: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._closing = False  # no further requests are taken (shutdown, error or Connection: close)
        self._linger: Linger | None = None  # set once a request is refused: input is discarded
        # State of the message being parsed.
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        # Bytes of whole reads that ended with the head still incomplete (httptools buffers a
        # header value itself until its line ends, so the count is kept here, per read).
        self._head_size = 0
        self._in_head = False
        self._rejected: HttpResponse | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, hence a cast, not a check.
        self._transport = cast(asyncio.Transport, transport)
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self._closing = True
        self._queue.clear()
        self._release(self._counted)
        if self._linger is not None:
            self._linger.cancel()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        # Nobody is left to answer: a request still queued in a scheduler leaves it (CANCELED).
        if self._worker is not None:
            self._worker.cancel()

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            if self._linger is not None:
                self._linger.discard(data)
            return
        head_before = self._in_head
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject_and_close(error_response(400, "protocol upgrades are not supported"))
        except httptools.HttpParserError as exc:
            self._reject_and_close(error_response(400, f"malformed HTTP request: {exc}"))
        if head_before and self._in_head and not self._closing:
            self._head_size += len(data)
            if self._head_size > MAX_HEAD_SIZE:
                self._reject_and_close(
                    error_response(431, f"request line and headers exceed {MAX_HEAD_SIZE} bytes")
                )

    # -- httptools callbacks ---------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = 0
        self._head_size = 0
        self._in_head = True
        self._rejected = None

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._in_head = False
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._limit:
            self._rejected = _too_large(int(length), self._limit)
            self._reject_and_close(self._rejected, int(length))
            return
        if length is not None and length.isdigit() and self._budget.exceeded_by(int(length)):
            self._rejected = _overloaded(self._budget.limit)
            self._reject_and_close(self._rejected, int(length))
            return
        if self._headers.get("expect", "").lower() == "100-continue" and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._rejected is not None:
            return
        self._body_size += len(body)
        if self._body_size > self._limit:
            self._rejected = _too_large(self._body_size, self._limit)
            self._reject_and_close(self._rejected)
            return
        self._counted += len(body)
        self._budget.used += len(body)
        self._body.append(body)  # before the check: a refusal releases the whole body held
        if self._budget.limit and self._budget.used > self._budget.limit:
            self._rejected = _overloaded(self._budget.limit)
            length = self._headers.get("content-length", "")
            self._reject_and_close(
                self._rejected, int(length) - self._body_size if length.isdigit() else None
            )

    def on_message_complete(self) -> None:
        if self._rejected is not None or self._closing:
            return
        url = self._url.decode("latin-1")
        path = url.split("?", 1)[0]
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body = []
        method = self._parser.get_method().decode("ascii")
        request = HttpRequest(method, path, self._headers, body)
        self._enqueue(_Pending(request, self._parser.should_keep_alive(), size=self._body_size))

    # -- request processing ----------------------------------------------------------------------
    def _enqueue(self, pending: _Pending) -> None:
        if (
            self._worker is None
            and not self._queue
            and pending.request is not None
            and (self._writable is None or self._writable.done())
            and self._answer_now(pending)
        ):
            return
        self._queue.append(pending)
        if len(self._queue) > _MAX_PIPELINED and self._transport is not None and not self._reading_paused:
            self._transport.pause_reading()
            self._reading_paused = True
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._serve_queue())

    def _answer_now(self, pending: _Pending) -> bool:
        """The hot path for an inference with nothing queued before it: queue it in the model's
        scheduler and answer from its future's callback, with no task. False: not an inference."""
        assert pending.request is not None
        started = self._app.start_infer(pending.request)
        if started is None:
            return False
        if isinstance(started, HttpResponse):  # refused before queueing
            self._release(pending.size)
            self._respond(pending, started)
            return True
        self._worker = started.future  # connection_lost cancels it: the request leaves the queue
        on_done(started.future, lambda _: self._infer_done(pending, started))
        return True

    def _infer_done(self, pending: _Pending, call: InferCall) -> None:
        self._worker = None
        self._release(pending.size)
        if call.future.cancelled():
            return
        self._respond(pending, self._app.finish_infer(call))
        if self._queue and self._worker is None and not self._closing:
            self._worker = asyncio.get_running_loop().create_task(self._serve_queue())

    def _respond(self, pending: _Pending, response: HttpResponse) -> bool:
        """Write the answer; False when the connection is (now) closed."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return False
        keep_alive = pending.keep_alive and not (self._closing and not self._queue)
        self._write(transport, response, keep_alive)
        if not keep_alive:
            self._closing = True
            if self._linger is not None:
                self._linger.answered(asyncio.get_running_loop())
            else:
                transport.close()
        return keep_alive

    def _reject_and_close(self, response: HttpResponse, declared_rest: int | None = None) -> None:
        """Answer after the requests already queued, then close; what the client still sends
        (`declared_rest` body bytes, if known) is discarded meanwhile, not left to reset it."""
        if self._closing:
            return
        self._closing = True
        self._release(sum(map(len, self._body)))  # the refused body is dropped now, not at close
        self._body = []
        if self._transport is not None:
            self._linger = Linger(self._transport, linger_budget(declared_rest))
        self._enqueue(_Pending(None, keep_alive=False, response=response))

    async def _serve_queue(self) -> None:
        try:
            while self._queue:
                pending = self._queue.popleft()
                if self._reading_paused and len(self._queue) <= _MAX_PIPELINED // 2:
                    self._reading_paused = False
                    if self._transport is not None and not self._closing:
                        self._transport.resume_reading()
                response = pending.response
                if response is None:
                    assert pending.request is not None
                    try:
                        response = await self._app.handle(pending.request)
                    finally:
                        self._release(pending.size)
                if response.stream is not None:  # generate_stream: events as the model sends them
                    if not await self._respond_streamed(pending, response):
                        return
                    continue
                if not self._respond(pending, response):
                    return
                if self._writable is not None and not self._writable.done():
                    await self._writable
        finally:
            self._worker = None

    async def _respond_streamed(self, pending: _Pending, response: HttpResponse) -> bool:
        """A chunked answer: the head and `body` now, then each chunk of `response.stream` as it
        comes. The connection closing cancels this task, and with it the request."""
        transport = self._transport
        assert response.stream is not None
        if transport is None or transport.is_closing():
            return False
        head = [
            _STATUS_LINES.get(response.status) or _status_line(response.status),
            b"Content-Type: ",
            response.content_type.encode("latin-1"),
            b"\r\nTransfer-Encoding: chunked\r\nCache-Control: no-cache\r\n\r\n",
        ]
        if response.body:
            head.append(b"%x\r\n%b\r\n" % (len(response.body), response.body))
        transport.write(b"".join(head))
        async for chunk in response.stream:
            if transport.is_closing():
                return False
            transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            if self._writable is not None and not self._writable.done():
                await self._writable
        transport.write(b"0\r\n\r\n")
        if not pending.keep_alive or self._closing:
            self._closing = True
            transport.close()
            return False
        return True

    def _release(self, size: int) -> None:
        size = min(size, self._counted)  # never below what this connection counted
        self._counted -= size
        self._budget.used -= size

    @staticmethod
    def _write(transport: asyncio.Transport, response: HttpResponse, keep_alive: bool) -> None:
        head = [
            _STATUS_LINES.get(response.status) or _status_line(response.status),
            b"Content-Type: ",
            response.content_type.encode("latin-1"),
            b"\r\nContent-Length: ",
            str(response.content_length).encode("ascii"),
            b"\r\n",
        ]
        for name, value in response.headers:
            head.append(f"{name}: {value}\r\n".encode("latin-1"))
        if not keep_alive:
            head.append(b"Connection: close\r\n")
        head.append(b"\r\n")
        head.append(response.body)
        tail = response.tail
        # One write (one send syscall) for small answers; big tensors go as they are, uncopied.
        if tail and sum(memoryview(part).nbytes for part in tail) > _JOIN_LIMIT:
            transport.writelines([b"".join(head), *tail])
        else:
            transport.write(b"".join([*head, *tail]))

    # -- shutdown --------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._worker is not None

    def close_when_idle(self) -> None:
        """Finish the requests already received, then close; take no new ones."""
        self._closing = True
        if not self.busy and self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


class HttpServer:
    """A listening HTTP front end; `stop(grace)` drains in-flight requests for up to `grace` seconds."""

    def __init__(self, server: asyncio.Server, connections: set[HttpConnection]) -> None:
        self._server = server
        self._connections = connections

    @property
    def port(self) -> int:
        sockets = self._server.sockets
        return int(sockets[0].getsockname()[1]) if sockets else 0

    async def stop(self, grace: float) -> None:
        self._server.close()
        for connection in list(self._connections):
            connection.close_when_idle()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(grace, 0.0)
        while any(c.busy for c in self._connections) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for connection in list(self._connections):
            connection.abort()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)


class HttpOptions(Protocol):
    """The ServerOptions fields the HTTP front end reads (server.options.ServerOptions has them)."""

    @property
    def http_host(self) -> str: ...
    @property
    def http_port(self) -> int: ...
    @property
    def http_max_input_size(self) -> int: ...


async def start_http(
    dataplane: DataPlaneApi,
    options: HttpOptions,
    regions: RegionTable | None = None,
) -> HttpServer:
    """Listen on `options.http_host:options.http_port` (port 0: any free port, see `.port`).
    `regions`: the client shared-memory regions, CUDA ones through `regions.cuda` (shared with gRPC;
    None: refused)."""
    restrictions = parse_restrictions(
        getattr(options, "http_restricted_api", []), flag="--http-restricted-api"
    )
    app = HttpApp(dataplane, options.http_max_input_size, restrictions, regions)
    connections: set[HttpConnection] = set()
    budget = BodyBudget(int(getattr(options, "max_pending_bytes", 0)))  # see BodyBudget
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: HttpConnection(app, connections, budget),
        host=options.http_host,
        port=options.http_port,
        reuse_address=True,
        backlog=1024,
    )
    logger.info("HTTP service listening on %s:%d", options.http_host, server.sockets[0].getsockname()[1])
    return HttpServer(server, connections)
