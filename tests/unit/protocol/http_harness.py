"""An HttpApp over a real DataPlane and real in-process python models: no socket, no worker process.

    with serving(tmp_path) as http:
        response = http.post("/v2/models/identity/infer", body)

Every model runs inline (TRITONCTL_INSTANCE_MODE), so an inference is a real execute() call on the
harness's own event loop. Models (INPUT0 -> OUTPUT0 unless said):
    identity   FP32 [-1, 4], max_batch_size 8       flat      FP32 [4], max_batch_size 0
    strings    BYTES [-1, 2], upper-cased            half      FP16 [-1, 2]
    add_sub    FP32 INPUT0, INPUT1 -> OUTPUT0 (sum), OUTPUT1 (difference)
    spare      on disk, not loaded at start          broken    initialize() fails
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from server.core.dataplane import DataPlane
from server.core.registry import ModelRegistry
from server.errors import ServerError
from server.protocol.http.routes import HttpApp, HttpRequest, HttpResponse, InferCall
from server.vocabulary.restrictions import Restrictions
from server.workers.settings import WorkerOptions
from tests.support.models import write_python_model

INFER = "/v2/models/identity/infer"
MAX_INPUT_SIZE = 1 << 16
INLINE = {"TRITONCTL_INSTANCE_MODE": "inline"}
LOADED = ("identity", "flat", "strings", "half", "add_sub")


def write_models(repo: Path) -> None:
    write_python_model(repo, "identity", "identity", dims=[4], parameters=INLINE)
    write_python_model(repo, "flat", "identity", dims=[4], max_batch_size=0, parameters=INLINE)
    write_python_model(repo, "strings", "strings", dims=[2], parameters=INLINE)
    write_python_model(repo, "half", "identity", dtype="TYPE_FP16", dims=[2], parameters=INLINE)
    write_python_model(repo, "add_sub", "add_sub", dims=[4], parameters=INLINE)
    write_python_model(repo, "spare", "identity", dims=[4], parameters=INLINE)
    write_python_model(repo, "broken", "init_fails", dims=[4], parameters=INLINE)


class Http:
    """Drives `HttpApp.handle` on its own event loop, where the in-process models live."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, dataplane: DataPlane, app: HttpApp, repo: Path
    ) -> None:
        self.loop = loop
        self.dataplane = dataplane
        self.app = app
        self.repo = repo

    def call(self, method: str, path: str, body: bytes = b"", **headers: str) -> HttpResponse:
        """`headers` by lower-case name, '_' for '-' (content_encoding=...)."""
        request = HttpRequest(method, path, {k.replace("_", "-"): v for k, v in headers.items()}, body)
        return self.loop.run_until_complete(self.app.handle(request))

    def get(self, path: str, **headers: str) -> HttpResponse:
        return self.call("GET", path, b"", **headers)

    def post(self, path: str, body: bytes | dict[str, Any] = b"", **headers: str) -> HttpResponse:
        return self.call("POST", path, body if isinstance(body, bytes) else orjson.dumps(body), **headers)

    def start_infer(self, request: HttpRequest) -> InferCall | HttpResponse | None:
        """The socket layer's hot path; on the loop, as the socket layer calls it."""

        async def start() -> InferCall | HttpResponse | None:
            return self.app.start_infer(request)

        return self.loop.run_until_complete(start())

    def finish_infer(self, call: InferCall) -> HttpResponse:
        """Once the call's future has settled."""

        async def finish() -> HttpResponse:
            await asyncio.wait([call.future])
            return self.app.finish_infer(call)

        return self.loop.run_until_complete(finish())

    def with_restrictions(self, restrictions: Restrictions) -> Http:
        return Http(
            self.loop, self.dataplane, HttpApp(self.dataplane, MAX_INPUT_SIZE, restrictions), self.repo
        )


@contextlib.contextmanager
def serving(repo: Path) -> Iterator[Http]:
    """Load the models of `repo` (write_models) and serve them; unloads everything at the end."""
    loop = asyncio.new_event_loop()
    registry = ModelRegistry([repo], worker_options=WorkerOptions(), visible_gpus=[])
    try:
        for name in (*LOADED, "broken"):
            with contextlib.suppress(ServerError):  # broken fails on purpose: it is listed with why
                loop.run_until_complete(registry.load(name))
        dataplane = DataPlane(registry, control_mode="explicit")
        dataplane.mark_started()
        yield Http(loop, dataplane, HttpApp(dataplane, MAX_INPUT_SIZE), repo)
    finally:
        loop.run_until_complete(registry.close(0.0))
        loop.close()


def json_of(response: HttpResponse) -> Any:
    return orjson.loads(response.body)


def error_of(response: HttpResponse) -> str:
    message: str = json_of(response)["error"]
    return message


def fp32_input(values: list[float], shape: list[int] | None = None, name: str = "INPUT0") -> dict[str, Any]:
    return {"name": name, "shape": shape or [1, len(values)], "datatype": "FP32", "data": values}


def infer_body(*inputs: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"inputs": list(inputs), **fields}


def gzipped(value: dict[str, Any]) -> bytes:
    return gzip.compress(orjson.dumps(value))
