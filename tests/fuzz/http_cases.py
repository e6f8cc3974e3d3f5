"""HTTP fuzz cases: hypothesis strategies for requests, a raw-socket sender and the verdict.

Three shapes of request: structured KServe v2 requests with random routes, headers and JSON
(infer bodies with random tensors, shapes and datatypes, the binary extension with random sizes),
well-formed requests whose bytes were then mutated, and plain garbage. The verdict: every request
that reaches the server gets an answer, and no answer is a 500 (a 500 is a bug: every input
mistake has its own 4xx).

Used by tests/fuzz/test_fuzz_http.py (short, deterministic) and benchmarks/fuzz_long.py (100k+).
"""

from __future__ import annotations

import gzip
import json
import re
import socket
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

from tests.fuzz.common import mutate_bytes

DATATYPES = (
    "BOOL",
    "UINT8",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT64",
    "FP16",
    "FP32",
    "FP64",
    "BF16",
    "BYTES",
)
MODELS = ("identity", "strings", "nope")

_ROUTES = (
    "/v2",
    "/v2/health/live",
    "/v2/health/ready",
    "/v2/models/{m}",
    "/v2/models/{m}/ready",
    "/v2/models/{m}/config",
    "/v2/models/{m}/stats",
    "/v2/models/stats",
    "/v2/models/{m}/infer",
    "/v2/models/{m}/versions/{v}/infer",
    "/v2/models/{m}/versions/{v}",
    "/v2/repository/index",
    "/v2/repository/models/{m}/load",
    "/v2/repository/models/{m}/unload",
    "/v2/systemsharedmemory/status",
    "/v2/cudasharedmemory/region/{m}/register",
    "/v2/trace/setting",
    "/v2/logging",
    "/metrics",
    "/{m}",
)


@dataclass
class HttpCase:
    """One request as it goes on the wire; `raw` cases are sent as they are."""

    method: str = "GET"
    path: str = "/"
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    raw: bytes | None = None

    def to_bytes(self) -> bytes:
        if self.raw is not None:
            return self.raw
        lines = [f"{self.method} {self.path} HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        lines += [f"Content-Length: {len(self.body)}", "Connection: close"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


# -- strategies ------------------------------------------------------------------------------------
_text = st.text(max_size=12)
_json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | _text
json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_text, inner, max_size=5),
    max_leaves=20,
)
dims = st.integers(-3, 6) | st.sampled_from([0, 1 << 31, 1 << 62, -(1 << 62), 2**64])
shapes = st.lists(dims, max_size=4)


def _data_for(draw: st.DrawFn, datatype: str, shape: list[int]) -> Any:
    count = 1
    for dim in shape:
        count *= max(dim, 0)
    count = count if 0 <= count <= 64 else draw(st.integers(0, 8))
    if draw(st.booleans()):
        count = draw(st.integers(0, 12))  # often the wrong count on purpose
    if datatype == "BYTES":
        return draw(st.lists(_text, min_size=count, max_size=count))
    if datatype == "BOOL":
        return draw(st.lists(st.booleans(), min_size=count, max_size=count))
    element = st.floats() if datatype.startswith(("FP", "BF")) else st.integers(-(2**65), 2**65)
    return draw(st.lists(element, min_size=count, max_size=count))


@st.composite
def infer_tensors(draw: st.DrawFn) -> dict[str, Any]:
    datatype = draw(st.sampled_from(DATATYPES) | _text)
    shape = draw(shapes)
    tensor: dict[str, Any] = {
        "name": draw(st.sampled_from(["INPUT0", "INPUT1", ""]) | _text),
        "datatype": datatype,
        "shape": shape,
    }
    if draw(st.booleans()):
        tensor["data"] = _data_for(draw, datatype, shape) if draw(st.booleans()) else draw(json_values)
    if draw(st.booleans()):
        tensor["parameters"] = draw(
            st.dictionaries(st.sampled_from(["binary_data_size", "shared_memory_region", "x"]), json_values)
        )
    return draw(st.just(tensor) | st.dictionaries(_text, json_values, max_size=3))


@st.composite
def infer_bodies(draw: st.DrawFn) -> tuple[bytes, list[tuple[str, str]]]:
    """A JSON infer request, sometimes with the binary extension; (body, extra headers)."""
    header: dict[str, Any] = {"inputs": draw(st.lists(infer_tensors(), max_size=3))}
    if draw(st.booleans()):
        outputs = st.fixed_dictionaries(
            {"name": st.sampled_from(["OUTPUT0", "OUTPUT1"]) | _text},
            optional={
                "parameters": st.dictionaries(
                    st.sampled_from(["binary_data", "classification", "shared_memory_region"]), json_values
                )
            },
        )
        header["outputs"] = draw(st.lists(outputs, max_size=3))
    if draw(st.booleans()):
        header["parameters"] = draw(
            st.dictionaries(st.sampled_from(["binary_data_output", "priority", "timeout", "x"]), json_values)
        )
    if draw(st.booleans()):
        header["id"] = draw(json_values)
    encoded = json.dumps(header).encode()
    headers: list[tuple[str, str]] = [("Content-Type", "application/json")]
    if draw(st.booleans()):  # binary extension: trailing bytes and a header length
        tail = draw(st.binary(max_size=64))
        if draw(st.booleans()):
            tail = b"".join(struct.pack("<I", len(p)) + p for p in draw(st.lists(st.binary(max_size=6))))
        length = draw(st.just(str(len(encoded))) | st.integers(-5, len(encoded) + 70).map(str) | _text)
        headers.append(("Inference-Header-Content-Length", length))
        encoded += tail
    return encoded, headers


def _encode(draw: st.DrawFn, body: bytes, headers: list[tuple[str, str]]) -> bytes:
    encoding = draw(st.sampled_from(["", "", "", "gzip", "deflate", "br", "gzip, deflate", "identity"]))
    if encoding:
        headers.append(("Content-Encoding", encoding))
        if encoding == "gzip" and draw(st.booleans()):
            return gzip.compress(body)
        if encoding == "deflate" and draw(st.booleans()):
            return zlib.compress(body)
    return body


_header_names = st.sampled_from(
    ["Accept-Encoding", "Content-Type", "Expect", "X-Anything", "admin-key", "Upgrade", "Connection"]
)
_header_values = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=20)


@st.composite
def structured_cases(draw: st.DrawFn) -> HttpCase:
    template = draw(st.sampled_from(_ROUTES))
    model = draw(st.sampled_from(MODELS) | _text.map(lambda t: quote(t, safe="")))
    version = draw(st.sampled_from(["1", "0", "2", "-1", "x", "99999999999999999999"]))
    path = template.format(m=model or "m", v=version)
    if draw(st.integers(0, 9)) == 0:
        path += draw(st.sampled_from(["?", "?a=b", "/", "//", "/..", "%00", "%ff"]))
    method = draw(st.sampled_from(["GET", "POST", "POST", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"]))
    headers = draw(st.lists(st.tuples(_header_names, _header_values), max_size=3))
    headers = [(name, value) for name, value in headers if name != "Connection"]
    kind = draw(st.integers(0, 3))
    if kind == 0:
        body, extra = draw(infer_bodies())
        headers += extra
    elif kind == 1:
        body = json.dumps(draw(json_values)).encode()
    elif kind == 2:
        body = draw(st.binary(max_size=200))
    else:
        body = b""
    body = _encode(draw, body, headers)
    return HttpCase(method, path, headers, body)


@st.composite
def mutated_cases(draw: st.DrawFn) -> HttpCase:
    """A well-formed request whose bytes were flipped, cut or extended."""
    data = mutate_bytes(draw, draw(structured_cases()).to_bytes(), 8)
    return HttpCase(raw=data + b"\r\n\r\n")


garbage_cases = st.binary(max_size=300).map(lambda data: HttpCase(raw=data + b"\r\n\r\n"))
http_cases = structured_cases() | mutated_cases() | garbage_cases


# -- sending and the verdict ----------------------------------------------------------------------
_STATUS = re.compile(rb"(?:^|\r\n\r\n)HTTP/1\.1 (\d{3}) ")


def _complete(answer: bytes) -> bool:
    """True once `answer` holds a whole final (non-1xx) response framed by Content-Length."""
    while True:
        head, separator, rest = answer.partition(b"\r\n\r\n")
        if not separator:
            return False
        if not head.startswith(b"HTTP/1.1 1"):
            break
        answer = rest  # skip "100 Continue"
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            length = int(value.strip())
    return len(rest) >= length


@dataclass
class HttpOutcome:
    statuses: list[int]  # every status line that came back (100 Continue, then the answer)
    timed_out: bool
    answer: bytes


def send(port: int, case: HttpCase, timeout: float = 10.0) -> HttpOutcome:
    """Send the case on a fresh connection and read until the server closes (or the timeout).

    Raw (mutated, garbage) bytes may leave a request half-framed, so the server rightly waits
    for more: those get a short timeout and no verdict on silence."""
    chunks: list[bytes] = []
    timed_out = False
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.settimeout(timeout if case.raw is None else min(timeout, 1.0))
        try:
            sock.sendall(case.to_bytes())
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                if case.raw is not None and _complete(b"".join(chunks)):
                    break  # a mangled "Connection: close" keeps the connection open: done anyway
        except TimeoutError:
            timed_out = True
        except (ConnectionResetError, BrokenPipeError):
            pass
    answer = b"".join(chunks)
    return HttpOutcome([int(code) for code in _STATUS.findall(answer)], timed_out, answer)


def check(case: HttpCase, outcome: HttpOutcome) -> None:
    """No 500s; well-formed requests always get an answer, never a hang."""
    assert 500 not in outcome.statuses, f"500 for {case!r}: {outcome.answer[:600]!r}"
    if case.raw is None:
        assert not outcome.timed_out, f"no answer in time for {case!r}"
        assert [code for code in outcome.statuses if code >= 200], (
            f"no final status for {case!r}: {outcome.answer[:300]!r}"
        )
