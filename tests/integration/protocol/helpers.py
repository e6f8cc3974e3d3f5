"""Shared expectations of the front-end tests: the add/sub models of every backend and raw HTTP."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class AddSubModel:
    name: str
    inputs: tuple[str, str]
    outputs: tuple[str, str]
    platform: str


ADD_SUB_MODELS = (
    AddSubModel("py_add_sub", ("INPUT0", "INPUT1"), ("OUTPUT0", "OUTPUT1"), "python"),
    AddSubModel("onnx_add_sub", ("INPUT0", "INPUT1"), ("OUTPUT0", "OUTPUT1"), "onnxruntime_onnx"),
    AddSubModel("ts_add_sub", ("INPUT__0", "INPUT__1"), ("OUTPUT__0", "OUTPUT__1"), "pytorch_libtorch"),
)
ADD_SUB_IDS = [model.name for model in ADD_SUB_MODELS]


def add_sub_operands(rows: int = 2) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    a = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4)
    return a, np.full((rows, 4), 0.5, dtype=np.float32)


def http_request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def split_responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Parse consecutive HTTP/1.1 responses (Content-Length framed) out of raw bytes."""
    responses = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
        length = int(headers.get("content-length", "0"))
        responses.append((int(status_line.split()[1]), headers, rest[:length]))
        data = rest[length:]
    return responses


def infer_body(inputs: list[dict[str, Any]], **extra: Any) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()
