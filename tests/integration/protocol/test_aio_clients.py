"""tritonclient's asyncio clients (tritonclient.http.aio, tritonclient.grpc.aio) over every method
they offer, against the real server on both gRPC stacks.

Each client goes through `Recorder`, which notes every public method used; a method of the client
that the test neither calls nor lists in *_SKIPPED (with its reason) fails the test, so a method
added by a tritonclient upgrade cannot go untested. Endpoints this server does not implement
(trace) must answer a clean InferenceServerException, not a decoding error.
http.aio matters in particular: aiohttp sends `Accept-Encoding: gzip, deflate` by default and the
client inflates only inference answers, so the server may compress nothing else (as Triton).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import tritonclient.grpc.aio as grpcaio
import tritonclient.http.aio as httpaio
from tritonclient.utils import InferenceServerException

from tests.support.models import write_python_model
from tests.support.server import RunningServer, start_server

pytestmark = pytest.mark.integration

MODEL = "identity"
LOADABLE = "loadable"
DATA = np.arange(4, dtype=np.float32).reshape(1, 4)

# Public methods not exercised against the server, with the reason.
HTTP_SKIPPED = {"close": "called by every test when it is done (Recorder does not see it)"}
GRPC_SKIPPED = {"close": "called by every test when it is done (Recorder does not see it)"}


class Recorder:
    """Forwards to a client and records the public methods taken from it."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.used: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.client, name)
        if callable(value) and not name.startswith("_"):
            self.used.add(name)
        return value


class HeaderPlugin:
    """A tritonclient plugin: adds a header to every request and counts the calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, request: Any) -> None:
        self.calls += 1
        request.headers["x-aio-test"] = "1"


def public_methods(cls: type) -> set[str]:
    return {name for name, _ in inspect.getmembers(cls, callable) if not name.startswith("_")}


def assert_all_used(cls: type, used: set[str], skipped: dict[str, str]) -> None:
    missing = public_methods(cls) - used - set(skipped)
    assert not missing, f"{cls.__module__}.{cls.__name__}: methods nobody tests: {sorted(missing)}"


async def assert_unsupported(call: Awaitable[Any]) -> None:
    with pytest.raises(InferenceServerException) as refused:
        await call
    assert "not supported" in str(refused.value), str(refused.value)


async def assert_refused(call: Awaitable[Any], fragment: str) -> None:
    with pytest.raises(InferenceServerException) as refused:
        await call
    assert fragment in str(refused.value), str(refused.value)


def serve(tmp_path_factory: pytest.TempPathFactory, stack: str) -> Iterator[RunningServer]:
    repo: Path = tmp_path_factory.mktemp(f"aio_{stack}")
    write_python_model(repo, MODEL, "identity", dims=[4])
    write_python_model(repo, LOADABLE, "identity", dims=[4])
    args = (f"--grpc-stack={stack}", "--model-control-mode=explicit", f"--load-model={MODEL}")
    with start_server(repo, *args, timeout=120) as running:
        yield running


@pytest.fixture(scope="module")
def h2_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    yield from serve(tmp_path_factory, "h2")


@pytest.fixture(scope="module")
def grpcio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    yield from serve(tmp_path_factory, "grpcio")


@pytest.fixture(params=["h2", "grpcio"])
def server(request: pytest.FixtureRequest) -> RunningServer:
    target: RunningServer = request.getfixturevalue(f"{request.param}_server")
    return target


# -- tritonclient.http.aio ----------------------------------------------------------------------
def http_input(binary: bool) -> Any:
    tensor = httpaio.InferInput("INPUT0", [1, 4], "FP32")
    tensor.set_data_from_numpy(DATA, binary_data=binary)
    return tensor


async def http_model_control(client: Recorder) -> None:
    index = await client.get_model_repository_index()
    assert {entry["name"] for entry in index} >= {MODEL, LOADABLE}
    await client.load_model(LOADABLE)
    assert await client.is_model_ready(LOADABLE)
    await client.unload_model(LOADABLE)
    assert not await client.is_model_ready(LOADABLE)


async def http_infer(client: Recorder, url: str) -> None:
    for binary in (True, False):
        output = httpaio.InferRequestedOutput("OUTPUT0", binary_data=binary)
        result = await client.infer(MODEL, [http_input(binary)], outputs=[output])
        assert result.as_numpy("OUTPUT0").tolist() == DATA.tolist()
    for algorithm in ("gzip", "deflate"):  # compressed both ways: the one answer that is compressed
        result = await client.infer(
            MODEL,
            [http_input(True)],
            request_compression_algorithm=algorithm,
            response_compression_algorithm=algorithm,
        )
        assert result.as_numpy("OUTPUT0").tolist() == DATA.tolist()
    # The static helpers, on a raw exchange: a gzip-compressed binary answer, parsed by the client.
    outputs = [httpaio.InferRequestedOutput("OUTPUT0")]
    body, json_size = client.generate_request_body([http_input(True)], outputs=outputs)
    headers = {"Accept-Encoding": "gzip"}
    if json_size is not None:
        headers["Inference-Header-Content-Length"] = str(json_size)
    infer_url = f"http://{url}/v2/models/{MODEL}/infer"
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.post(infer_url, data=body, headers=headers) as answer,
    ):
        assert answer.status == 200
        assert answer.headers["Content-Encoding"] == "gzip"
        raw = await answer.read()
        length = answer.headers.get("Inference-Header-Content-Length")
    result = client.parse_response_body(
        raw, header_length=int(length) if length else None, content_encoding="gzip"
    )
    assert result.as_numpy("OUTPUT0").tolist() == DATA.tolist()


async def exercise_http(url: str) -> set[str]:
    client = Recorder(httpaio.InferenceServerClient(url))
    try:
        plugin = HeaderPlugin()
        client.register_plugin(plugin)
        assert client.plugin() is plugin
        assert await client.is_server_live()
        assert await client.is_server_ready()
        assert plugin.calls == 2
        client.unregister_plugin()
        assert client.plugin() is None
        assert (await client.get_server_metadata())["extensions"]
        assert await client.is_model_ready(MODEL)
        assert (await client.get_model_metadata(MODEL))["name"] == MODEL
        assert (await client.get_model_config(MODEL))["name"] == MODEL
        await http_model_control(client)
        await http_infer(client, url)
        # The call of the issue: statistics, with aiohttp's default Accept-Encoding.
        stats = await client.get_inference_statistics(MODEL)
        assert stats["model_stats"][0]["inference_stats"]["success"]["count"] >= 5
        assert MODEL in {entry["name"] for entry in (await client.get_inference_statistics())["model_stats"]}
        await assert_unsupported(client.get_trace_settings())
        await assert_unsupported(client.get_trace_settings(model_name=MODEL))
        await assert_unsupported(client.update_trace_settings(settings={"trace_level": ["OFF"]}))
        assert (await client.get_log_settings())["log_verbose_level"] == 0  # the logging extension
        assert (await client.update_log_settings({"log_verbose_level": 0}))["log_format"] == "default"
        # Shared memory without --allow-client-shm (test_shared_memory.py has it on).
        assert await client.get_system_shared_memory_status() == []
        await assert_refused(client.register_system_shared_memory("region", "/key", 16), "--allow-client-shm")
        await client.unregister_system_shared_memory()
        assert await client.get_cuda_shared_memory_status() == []
        await assert_refused(
            client.register_cuda_shared_memory("region", "aGFuZGxl", 0, 16), "--allow-client-shm"
        )
        await client.unregister_cuda_shared_memory()
    finally:
        await client.client.close()
    return client.used


def test_http_aio_client_over_every_method(h2_server: RunningServer) -> None:
    used = asyncio.run(exercise_http(h2_server.http_url))
    assert_all_used(httpaio.InferenceServerClient, used, HTTP_SKIPPED)


# -- tritonclient.grpc.aio ----------------------------------------------------------------------
def grpc_input() -> Any:
    tensor = grpcaio.InferInput("INPUT0", [1, 4], "FP32")
    tensor.set_data_from_numpy(DATA)
    return tensor


async def grpc_model_control(client: Recorder) -> None:
    index = await client.get_model_repository_index()
    assert {entry.name for entry in index.models} >= {MODEL, LOADABLE}
    assert (await client.get_model_repository_index(as_json=True))["models"]
    await client.load_model(LOADABLE)
    assert await client.is_model_ready(LOADABLE)
    await client.unload_model(LOADABLE)
    assert not await client.is_model_ready(LOADABLE)


async def grpc_stream(client: Recorder) -> None:
    async def requests() -> AsyncIterator[dict[str, Any]]:
        for number in range(2):
            yield {"model_name": MODEL, "inputs": [grpc_input()], "request_id": str(number)}

    answers = []
    async for result, error in client.stream_infer(requests()):
        if error is not None:  # a non-decoupled model may refuse streaming: then cleanly
            assert isinstance(error, InferenceServerException), repr(error)
            assert error.message(), repr(error)
        else:
            assert result.as_numpy("OUTPUT0").tolist() == DATA.tolist()
        answers.append((result, error))
    assert len(answers) == 2


async def exercise_grpc(url: str) -> set[str]:
    client = Recorder(grpcaio.InferenceServerClient(url))
    try:
        plugin = HeaderPlugin()
        client.register_plugin(plugin)
        assert client.plugin() is plugin
        assert await client.is_server_live()
        assert await client.is_server_ready()
        assert plugin.calls == 2
        client.unregister_plugin()
        assert client.plugin() is None
        assert (await client.get_server_metadata()).extensions
        assert await client.is_model_ready(MODEL)
        assert (await client.get_model_metadata(MODEL)).name == MODEL
        assert (await client.get_model_config(MODEL)).config.name == MODEL
        await grpc_model_control(client)
        for algorithm in (None, "gzip"):
            result = await client.infer(MODEL, [grpc_input()], compression_algorithm=algorithm)
            assert result.as_numpy("OUTPUT0").tolist() == DATA.tolist()
        await grpc_stream(client)
        stats = await client.get_inference_statistics(MODEL, as_json=True)
        assert stats["model_stats"][0]["name"] == MODEL
        assert (await client.get_inference_statistics()).model_stats
        await assert_unsupported(client.get_trace_settings())
        await assert_unsupported(client.update_trace_settings(settings={"trace_level": ["OFF"]}))
        settings = (await client.get_log_settings(as_json=True))["settings"]
        assert settings["log_verbose_level"] == {"uint32_param": 0}  # the logging extension
        assert (await client.update_log_settings({"log_verbose_level": 0})).settings["log_info"].bool_param
        assert not (await client.get_system_shared_memory_status()).regions
        await assert_refused(client.register_system_shared_memory("region", "/key", 16), "--allow-client-shm")
        await client.unregister_system_shared_memory()
        assert not (await client.get_cuda_shared_memory_status()).regions
        await assert_refused(
            client.register_cuda_shared_memory("region", b"aGFuZGxl", 0, 16), "--allow-client-shm"
        )
        await client.unregister_cuda_shared_memory()
    finally:
        await client.client.close()
    return client.used


def test_grpc_aio_client_over_every_method(server: RunningServer) -> None:
    used = asyncio.run(exercise_grpc(server.grpc_url))
    assert_all_used(grpcaio.InferenceServerClient, used, GRPC_SKIPPED)
