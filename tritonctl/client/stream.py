"""`tritonctl infer --stream`: the generate_stream endpoint (server-sent events), read as it comes.

Works against any server with Triton's generate extension. Each `data: {...}` event is yielded
as soon as its chunk arrives; an `{"error": ...}` event or an error status raises ServerError.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import numpy as np

from server.errors import ServerError
from tritonctl.client.connection import ConnectionFailed, normalize_url
from tritonctl.client.inputs import read_value, split_assignment


def generate_body(assignments: list[str]) -> dict[str, Any]:
    """`NAME=VALUE` arguments as the generate request's JSON object."""
    body: dict[str, Any] = {}
    for text in assignments:
        name, value = split_assignment(text)
        data = read_value(value)
        body[name] = data.tolist() if isinstance(data, np.ndarray) else data
    return body


def generate_stream(
    url: str | None, model: str, body: dict[str, Any], version: str = "", timeout: float = 60.0
) -> Iterator[dict[str, Any]]:
    address = normalize_url(url, "http")
    host, _, port = address.rpartition(":")
    path = f"/v2/models/{quote(model, safe='')}"
    if version:
        path += f"/versions/{version}"
    path += "/generate_stream"
    connection = http.client.HTTPConnection(host or address, int(port or 8000), timeout=timeout)
    try:
        try:
            connection.request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})
            response = connection.getresponse()
        except OSError as exc:
            raise ConnectionFailed(f"cannot reach {address}: {exc}") from None
        if response.status != 200:
            text = response.read().decode(errors="replace")
            try:
                message = json.loads(text).get("error", text)
            except (json.JSONDecodeError, AttributeError):
                message = text
            raise ServerError(f"[{response.status}] {message}")
        while line := response.readline():
            if not line.startswith(b"data:"):
                continue
            event: dict[str, Any] = json.loads(line[5:])
            if "error" in event:
                raise ServerError(str(event["error"]))
            yield event
    finally:
        connection.close()
