"""HTTP routes of the shared-memory extensions (`/v2/systemsharedmemory/...`, `/v2/cudasharedmemory/...`).

    GET  v2/{system,cuda}sharedmemory[/region/{name}]/status
    POST v2/{system,cuda}sharedmemory/region/{name}/register
    POST v2/{system,cuda}sharedmemory[/region/{name}]/unregister

Bodies, status codes and messages follow Triton 2.51 (server/protocol/README.md lists where we
answer 400 and Triton 500).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import orjson

from server.errors import InvalidInput
from server.vocabulary.cuda_regions import CudaRegionTable
from server.vocabulary.shm_regions import RegionTable

Answer = tuple[int, Any]  # (HTTP status, JSON value or None for an empty 200 body)
NOT_FOUND: Answer = (404, {"error": "Not Found"})
METHOD_NOT_ALLOWED: Answer = (405, {"error": "Method Not Allowed"})


def route_shared_memory(
    method: str,
    kind: str,
    rest: list[str],
    body: bytes | bytearray,
    *,
    system: RegionTable,
    cuda: CudaRegionTable,
) -> Answer:
    """`rest`: the path after /v2/{kind}; `kind` is "systemsharedmemory" or "cudasharedmemory"."""
    name = ""
    if len(rest) == 3 and rest[0] == "region" and rest[1]:
        name = unquote(rest[1])
        action = rest[2]
    elif len(rest) == 1:
        action = rest[0]
    else:
        return NOT_FOUND
    if action == "status":
        if method != "GET":
            return METHOD_NOT_ALLOWED
        table: RegionTable | CudaRegionTable = system if kind == "systemsharedmemory" else cuda
        return 200, table.status(name)
    if action not in ("register", "unregister"):
        return NOT_FOUND
    if method != "POST":
        return METHOD_NOT_ALLOWED
    if action == "unregister":
        (system if kind == "systemsharedmemory" else cuda).unregister(name)
        return 200, None
    if not name:
        return NOT_FOUND
    request = _body(body)
    if kind == "systemsharedmemory":
        key = _field(request, "key")
        size = _field(request, "byte_size")
        system.register(name, key, request.get("offset", 0), size)
    else:
        handle = _field(request, "raw_handle")
        cuda.register(name, handle, _field(request, "device_id"), _field(request, "byte_size"))
    return 200, None


def _body(body: bytes | bytearray) -> dict[str, Any]:
    try:
        value = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"failed to parse the request JSON buffer: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInput("failed to parse the request JSON buffer: expected a JSON object")
    return value


def _field(request: dict[str, Any], name: str) -> Any:
    if name not in request:
        raise InvalidInput(f"Shared memory register request has no '{name}' field")
    return request[name]
