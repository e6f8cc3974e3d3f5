"""The HTTP API, independent of the socket layer: `HttpApp.handle(request) -> HttpResponse`.

Routes follow KServe v2 with Triton's extensions; status codes and `{"error": ...}` bodies follow
Triton 2.51 (see server/protocol/README.md for the few deliberate differences). The socket layer
(server.py) parses HTTP/1.1 and calls `handle`; benchmarks/http_stack.py mounts the same app on
another stack to compare them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import orjson

from server.errors import InvalidInput, ServerError, Unsupported
from server.protocol.api import DataPlaneApi
from server.protocol.http.generate import (
    EVENT_STREAM,
    decode_generate_request,
    generate_events,
    generate_once,
    response_json,
)
from server.protocol.http.infer_codec import DecodedInfer, decode_infer_request, encode_infer_result
from server.protocol.http.raw_binary import decode_raw_request
from server.protocol.http.shm_routes import route_shared_memory
from server.protocol.http.views import (
    model_metadata_json,
    repository_index_json,
    statistics_json,
)
from server.protocol.log_settings import LOG_CONTROL
from server.protocol.request_log import REQUEST_LOG
from server.protocol.restricted import http_denial
from server.protocol.shm_tensors import DISABLED, cuda_table, enable_direct_writes, release, write_outputs
from server.protocol.tensor_codec import classify_outputs
from server.repository.json_codec import message_to_json
from server.vocabulary.restrictions import Restrictions
from server.vocabulary.shm_regions import RegionTable
from server.vocabulary.stream import ResponseStream
from server.vocabulary.types import InferenceResult

logger = logging.getLogger(__name__)

JSON = "application/json"
OCTET_STREAM = "application/octet-stream"
TEXT = "text/plain"

_SHM_PREFIXES = ("systemsharedmemory", "cudasharedmemory")
_UNSUPPORTED_PREFIXES = {
    "trace": "the trace extension",
}


@dataclass(slots=True)
class HttpRequest:
    method: str
    path: str  # without the query string, still percent-encoded
    headers: dict[str, str]  # lower-case names
    body: bytes | bytearray = b""


@dataclass(slots=True)
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = JSON
    headers: list[tuple[str, str]] = field(default_factory=list)
    # Binary output tensors sent after `body` (written as-is, never joined here).
    tail: list[bytes | bytearray | memoryview] = field(default_factory=list)
    # A streamed answer (generate_stream): chunks written as they come, after `body`.
    stream: AsyncIterator[bytes] | None = None

    @property
    def content_length(self) -> int:
        return len(self.body) + sum(memoryview(part).nbytes for part in self.tail)


def error_response(status: int, message: str, content_type: str = JSON) -> HttpResponse:
    return HttpResponse(status, orjson.dumps({"error": message}), content_type)


def json_response(value: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(status, orjson.dumps(value))


_EMPTY_OK = HttpResponse(200, b"", TEXT)
_NOT_FOUND = error_response(404, "Not Found", TEXT)
_METHOD_NOT_ALLOWED = error_response(405, "Method Not Allowed", TEXT)


@dataclass(slots=True)
class InferCall:
    """A queued inference: the HTTP request, its decoded form and its result's future."""

    request: HttpRequest
    decoded: DecodedInfer
    future: asyncio.Future[InferenceResult]
    log_tag: str | None = None  # --log-verbose >= 1: how the request log names it (request_log.py)


def _infer_target(path: str) -> tuple[str, str] | None:
    """(model, version) of `/v2/models/{model}[/versions/{version}]/infer`, else None."""
    parts = path.split("/")
    # ["", "v2", "models", model, "infer"] or [..., model, "versions", version, "infer"]
    if parts[-1] != "infer" or len(parts) not in (5, 7) or parts[1] != "v2" or parts[2] != "models":
        return None
    if not parts[3]:
        return None
    if len(parts) == 5:
        return unquote(parts[3]), ""
    if parts[4] != "versions" or not parts[5].isdigit():
        return None
    return unquote(parts[3]), parts[5]


class HttpApp:
    """Routes a request to the DataPlane and maps ServerError to Triton's status and body."""

    def __init__(
        self,
        dataplane: DataPlaneApi,
        max_input_size: int,
        restrictions: Restrictions | None = None,
        regions: RegionTable | None = None,
    ) -> None:
        self.dataplane = dataplane
        self.max_input_size = max_input_size
        self.restrictions = restrictions or {}  # --http-restricted-api (server/protocol/restricted.py)
        # Client shared memory (vocabulary/shm_regions.py, cuda_regions.py): the server's tables,
        # shared with gRPC; without them it is refused.
        self.regions = regions if regions is not None else DISABLED
        self.cuda_regions = cuda_table(self.regions)

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """Any request. Inference goes through start_infer/finish_infer, the path the socket
        layer takes without a coroutine, so every inference is served one way."""
        started = self.start_infer(request)
        if isinstance(started, InferCall):
            with contextlib.suppress(Exception):  # its error is answered by finish_infer
                await started.future
            return self.finish_infer(started)
        if started is not None:
            return started
        if REQUEST_LOG.on:
            REQUEST_LOG.request("HTTP", f"{request.method} {request.path}")
        if self.restrictions and (denied := http_denial(self.restrictions, request.path, request.headers)):
            return error_response(403, denied)
        try:
            response = await self._route(request)
        except ServerError as exc:
            response = error_response(exc.http_status, exc.message)
        except Exception as exc:  # a bug: answer 500 and keep serving
            logger.exception("unhandled error on %s %s", request.method, request.path)
            response = error_response(500, f"internal error: {type(exc).__name__}: {exc}")
        return response

    async def _route(self, request: HttpRequest) -> HttpResponse:
        parts = request.path.strip("/").split("/")
        if not parts or parts[0] != "v2":
            return _NOT_FOUND
        rest = parts[1:]
        if not rest:
            return self._get_only(request) or json_response(self.dataplane.server_metadata())
        head = rest[0]
        if head == "models":
            return await self._models(request, rest[1:])
        if head == "health" and len(rest) == 2 and rest[1] in ("live", "ready"):
            if wrong := self._get_only(request):
                return wrong
            ok = self.dataplane.live() if rest[1] == "live" else self.dataplane.ready()
            return _EMPTY_OK if ok else HttpResponse(400, b"", TEXT)
        if head == "repository":
            return await self._repository(request, rest[1:])
        if head in _SHM_PREFIXES:
            body = _decompressed_body(request, self.max_input_size)
            status, value = route_shared_memory(
                request.method, head, rest[1:], body, system=self.regions, cuda=self.cuda_regions
            )
            if value is None:
                return HttpResponse(status, b"")
            return HttpResponse(status, orjson.dumps(value), TEXT if status in (404, 405) else JSON)
        if head == "logging" and len(rest) == 1:
            return self._logging(request)
        if head in _UNSUPPORTED_PREFIXES:
            raise Unsupported(f"{_UNSUPPORTED_PREFIXES[head]} is not supported by this server")
        return _NOT_FOUND

    @staticmethod
    def _get_only(request: HttpRequest) -> HttpResponse | None:
        return None if request.method == "GET" else _METHOD_NOT_ALLOWED

    async def _models(self, request: HttpRequest, rest: list[str]) -> HttpResponse:
        # /v2/models/stats | /v2/models/{m}[/versions/{v}][/ready|config|stats|infer|trace/setting]
        if rest == ["stats"]:
            return self._get_only(request) or self._stats("", "")
        if not rest or not rest[0]:
            return _NOT_FOUND
        model = unquote(rest[0])
        version = ""
        tail = rest[1:]
        if len(tail) >= 2 and tail[0] == "versions":
            version = tail[1]
            if not version.isdigit():
                return _NOT_FOUND
            tail = tail[2:]
        action = "/".join(tail)
        if action in ("generate", "generate_stream"):  # Triton's generate extension (generate.py)
            if request.method != "POST":
                return _METHOD_NOT_ALLOWED
            return await self._generate(request, model, version, stream=action == "generate_stream")
        if action == "infer":  # a POST that start_infer did not take is not an inference route
            return _METHOD_NOT_ALLOWED if request.method != "POST" else _NOT_FOUND
        if wrong := self._get_only(request):
            return wrong
        if action == "":
            return json_response(model_metadata_json(self.dataplane.model_metadata(model, version)))
        if action == "ready":
            if self.dataplane.model_ready(model, version):
                return _EMPTY_OK
            return error_response(400, "Model version not ready", TEXT)
        if action == "config":
            return json_response(message_to_json(self.dataplane.model_config(model, version)))
        if action == "stats":
            return self._stats(model, version)
        if action == "trace/setting":
            raise Unsupported("the trace extension is not supported by this server")
        return _NOT_FOUND

    async def _generate(
        self, request: HttpRequest, model: str, version: str, *, stream: bool
    ) -> HttpResponse:
        decoded = decode_generate_request(
            self.dataplane, model, version, _decompressed_body(request, self.max_input_size)
        )
        if REQUEST_LOG.on:  # its outcome: the status the HTTP request line is answered with
            REQUEST_LOG.infer("HTTP generate_stream" if stream else "HTTP generate", decoded)
        if not stream:
            return json_response(await generate_once(self.dataplane, decoded))
        responses = ResponseStream()
        self.dataplane.submit_stream(decoded, responses)
        try:
            first, final = await responses.next()  # an error before any event keeps its status
        except BaseException:
            responses.cancel()
            raise
        if isinstance(first, ServerError):
            return error_response(first.http_status, first.message)
        head = b"data: " + orjson.dumps(response_json(first)) + b"\n\n" if first is not None else b""
        events = None if final else generate_events(self.dataplane, responses)
        return HttpResponse(200, head, EVENT_STREAM, stream=events)

    def _stats(self, model: str, version: str) -> HttpResponse:
        statistics = self.dataplane.model_statistics(model, version)
        return json_response(statistics_json(statistics))

    def start_infer(self, request: HttpRequest) -> InferCall | HttpResponse | None:
        """The hot path, without a coroutine: an inference request is checked against the
        restricted APIs, decoded and queued here (or answered at once with its error); None for
        every other request (use `handle`)."""
        if request.method != "POST":
            return None
        target = _infer_target(request.path)
        if target is None:
            return None
        if REQUEST_LOG.on:
            REQUEST_LOG.request("HTTP", f"{request.method} {request.path}")
        if self.restrictions and (denied := http_denial(self.restrictions, request.path, request.headers)):
            return error_response(403, denied)
        try:
            call = self._start_infer(request, *target)
            if call.future.done():  # answered at once (a response-cache hit): no callback round
                return self.finish_infer(call)
            return call
        except ServerError as exc:
            if REQUEST_LOG.on:
                REQUEST_LOG.refused("HTTP", target[0], exc, str(exc.http_status))
            return error_response(exc.http_status, exc.message)
        except Exception as exc:  # a bug: answer 500 and keep serving
            logger.exception("unhandled error on %s %s", request.method, request.path)
            return error_response(500, f"internal error: {type(exc).__name__}: {exc}")

    def finish_infer(self, call: InferCall) -> HttpResponse:
        """The answer of a settled InferCall (its result, or its error)."""
        try:
            response = self._infer_response(call)
        except ServerError as exc:
            response = error_response(exc.http_status, exc.message)
        except Exception as exc:  # a bug: answer 500 and keep serving
            logger.exception("unhandled error answering %s", call.request.path)
            response = error_response(500, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            if call.decoded.shm_outputs:
                release(call.decoded.shm_outputs.values())
        if call.log_tag is not None:
            REQUEST_LOG.http_answer(call.log_tag, call.future, response.status, response.body)
        return _maybe_compress(call.request, response)

    def _start_infer(self, request: HttpRequest, model: str, version: str) -> InferCall:
        body = _decompressed_body(request, self.max_input_size)
        header_length = request.headers.get("inference-header-content-length")
        if header_length is not None and header_length.strip() == "0":  # raw binary request (raw_binary.py)
            decoded = decode_raw_request(model, version, body, self.dataplane.model_config(model, version))
        else:
            decoded = decode_infer_request(model, version, body, header_length, self.regions)
        if decoded.shm_outputs:
            enable_direct_writes(decoded.shm_outputs, self.dataplane, model, version)
        tag = REQUEST_LOG.infer("HTTP", decoded.request) if REQUEST_LOG.on else None
        try:
            return InferCall(request, decoded, self.dataplane.submit(decoded.request), tag)
        except BaseException:
            release(decoded.shm_outputs.values())
            raise

    @staticmethod
    def _logging(request: HttpRequest) -> HttpResponse:
        """Triton's logging extension (log_settings.py): GET the settings, POST changes to them."""
        if request.method == "GET":
            return json_response(LOG_CONTROL.as_dict())
        if request.method != "POST":
            return _METHOD_NOT_ALLOWED
        return json_response(LOG_CONTROL.update(_json_body(request, 1 << 20)))

    def _infer_response(self, call: InferCall) -> HttpResponse:
        result = call.future.result()
        decoded = call.decoded
        if decoded.classification:
            batched = self.dataplane.model_config(result.model, result.version).max_batch_size > 0
            labels = self.dataplane.output_labels(result.model, result.version)
            classify_outputs(result, decoded.classification, batched, labels)
        in_shm = write_outputs(result, decoded.shm_outputs) if decoded.shm_outputs else ()
        encoded = encode_infer_result(result, decoded.request.outputs, decoded.binary_output_default, in_shm)
        if not encoded.binary_parts:
            return HttpResponse(200, encoded.header)
        return HttpResponse(
            200,
            encoded.header,
            OCTET_STREAM,
            [("Inference-Header-Content-Length", str(len(encoded.header)))],
            encoded.binary_parts,
        )

    async def _repository(self, request: HttpRequest, rest: list[str]) -> HttpResponse:
        if request.method != "POST":
            return _METHOD_NOT_ALLOWED
        if rest == ["index"]:
            body = _json_body(request, self.max_input_size)
            ready_only = bool(body.get("ready", False))
            return json_response(repository_index_json(self.dataplane.repository_index(ready_only)))
        if len(rest) == 3 and rest[0] == "models" and rest[2] in ("load", "unload"):
            model = unquote(rest[1])
            parameters = _json_body(request, self.max_input_size).get("parameters") or {}
            if not isinstance(parameters, dict):
                raise InvalidInput("Unable to parse 'parameters': expected a JSON object")
            if rest[2] == "load":
                config, files = _load_parameters(parameters)
                await self.dataplane.load_model(model, config, files)
            else:
                await self.dataplane.unload_model(model, bool(parameters.get("unload_dependents", False)))
            return HttpResponse(200, b"")
        return _NOT_FOUND


def _load_parameters(parameters: dict[str, Any]) -> tuple[str | None, dict[str, bytes] | None]:
    """`config` (a JSON string, or an object for convenience) and `file:<path>` (base64) entries."""
    config = parameters.get("config")
    if config is not None and not isinstance(config, str):
        config = orjson.dumps(config).decode()
    files: dict[str, bytes] = {}
    for key, value in parameters.items():
        if not key.startswith("file:"):
            continue
        if not isinstance(value, str):
            raise InvalidInput(f"load parameter '{key}' must be a base64 string")
        try:
            files[key] = base64.b64decode(value, validate=True)
        except binascii.Error:
            raise InvalidInput(f"load parameter '{key}' is not valid base64") from None
    return config, files or None


def _json_body(request: HttpRequest, max_size: int) -> dict[str, Any]:
    body = _decompressed_body(request, max_size)
    if not body.strip():
        return {}
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"failed to parse the request JSON buffer: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInput("failed to parse the request JSON buffer: expected a JSON object")
    return value


def _decompressed_body(request: HttpRequest, max_size: int) -> bytes | bytearray:
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if not encoding or encoding == "identity":
        return request.body
    if encoding not in ("gzip", "deflate"):
        raise Unsupported(f"unsupported Content-Encoding '{encoding}' (gzip and deflate are supported)")
    wbits = 31 if encoding == "gzip" else 15
    decompressor = zlib.decompressobj(wbits)
    try:
        data = decompressor.decompress(request.body, max_size + 1)
    except zlib.error as exc:
        raise InvalidInput(f"failed to decompress the {encoding} request body: {exc}") from None
    if len(data) > max_size or decompressor.unconsumed_tail:
        raise InvalidInput(
            f"decompressed request body exceeds the maximum of {max_size} bytes (--http-max-input-size)"
        )
    return data


def _maybe_compress(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """Compress an inference answer as Accept-Encoding asks. Like Triton (http_server.cc: only
    InferRequestClass gets a response compression type), nothing else is ever compressed:
    tritonclient.http.aio sends aiohttp's default Accept-Encoding and inflates only infer answers."""
    accept = request.headers.get("accept-encoding")
    # Errors stay readable as-is, as in Triton.
    if not accept or response.status != 200 or response.content_length == 0:
        return response
    offered = {item.split(";")[0].strip().lower() for item in accept.split(",")}
    if "gzip" in offered:
        encoding, wbits = "gzip", 31
    elif "deflate" in offered:
        encoding, wbits = "deflate", 15
    else:
        return response
    compressor = zlib.compressobj(6, zlib.DEFLATED, wbits)
    payload = b"".join([compressor.compress(part) for part in (response.body, *response.tail)])
    return HttpResponse(
        response.status,
        payload + compressor.flush(),
        response.content_type,
        [*response.headers, ("Content-Encoding", encoding)],
    )
