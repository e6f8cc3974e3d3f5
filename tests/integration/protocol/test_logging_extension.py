"""Triton's logging extension (GET/POST /v2/logging, gRPC LogSettings) and what --log-verbose=1 logs.

Driven with unchanged tritonclient (HTTP, gRPC, aio). Expected bodies and refusals are the real
Triton 2.51's (measured on the pytriton-bundled tritonserver): the defaults below, `log_file`
refused with 501 / UNIMPLEMENTED and Triton's words (CVE-2024-0087). Log lines are awaited in the
server's log with a deadline, never after a sleep.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio
from tritonclient.utils import InferenceServerException

from tests.support.models import write_python_model, write_python_source
from tests.support.server import RunningServer, start_server

DEFAULTS = {
    "log_file": "",
    "log_info": True,
    "log_warning": True,
    "log_error": True,
    "log_verbose_level": 0,
    "log_format": "default",
}
REFUSAL = "log file location can not be updated through network protocol"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("logging-repo")
    write_python_model(repo, "identity", "identity", max_batch_size=8, dims=[4])
    with start_server(repo) as running:
        yield running


def _post(server: RunningServer, body: Any) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://{server.http_url}/v2/logging", data=json.dumps(body).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _infer_http(server: RunningServer, request_id: str, shape: tuple[int, int] = (1, 4)) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    tensor = httpclient.InferInput("INPUT0", list(shape), "FP32")
    tensor.set_data_from_numpy(np.ones(shape, dtype=np.float32))
    client.infer("identity", [tensor], request_id=request_id)


def _infer_grpc(server: RunningServer, request_id: str) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
    client.infer("identity", [tensor], request_id=request_id)


def test_defaults_and_updates_over_http(server: RunningServer) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    assert client.get_log_settings() == DEFAULTS
    try:
        updated = client.update_log_settings({"log_format": "ISO8601", "log_warning": False})
        assert updated == {**DEFAULTS, "log_format": "ISO8601", "log_warning": False}
        assert client.get_log_settings() == updated
        assert _post(server, {"someone_elses_field": 1}) == (200, updated)  # unknown names: ignored
    finally:
        client.update_log_settings({"log_format": "default", "log_warning": True})
    assert "logging" in client.get_server_metadata()["extensions"]


def test_log_file_is_never_settable_over_the_network(server: RunningServer) -> None:
    assert _post(server, {"log_file": "/tmp/elsewhere.log"}) == (501, {"error": REFUSAL})
    with pytest.raises(InferenceServerException, match=REFUSAL):
        grpcclient.InferenceServerClient(server.grpc_url).update_log_settings({"log_file": "/etc/x"})
    # Nothing else of a refused request applies either.
    assert _post(server, {"log_file": "x", "log_verbose_level": 3})[0] == 501
    assert httpclient.InferenceServerClient(server.http_url).get_log_settings() == DEFAULTS


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"log_info": "yes"}, "'log_info' must be a boolean"),
        ({"log_verbose_level": -1}, "unsigned integer"),
        ({"log_verbose_level": True}, "unsigned integer"),
        ({"log_verbose_level": 1 << 32}, "unsigned integer"),  # gRPC answers it as a uint32
        ({"log_format": "xml"}, "invalid argument for --log_format, got: xml"),
    ],
)
def test_bad_values_are_refused(server: RunningServer, body: dict[str, Any], message: str) -> None:
    status, answer = _post(server, body)
    assert status == 400 and message in answer["error"]


def test_grpc_and_aio_clients(server: RunningServer) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    settings = client.get_log_settings(as_json=True)["settings"]
    assert settings["log_verbose_level"] == {"uint32_param": 0}
    assert settings["log_info"] == {"bool_param": True}
    assert settings["log_format"] == {"string_param": "default"}
    assert settings["log_file"] == {"string_param": ""}

    async def aio() -> tuple[Any, Any]:
        grpc_aio = grpcaio.InferenceServerClient(server.grpc_url)
        http_aio = httpaio.InferenceServerClient(server.http_url)
        try:
            changed = await grpc_aio.update_log_settings({"log_error": False}, as_json=True)
            back = await http_aio.update_log_settings({"log_error": True})
            return changed, back
        finally:
            await grpc_aio.close()
            await http_aio.close()

    changed, back = asyncio.run(aio())
    assert changed["settings"]["log_error"] == {"bool_param": False}
    assert back == DEFAULTS


def test_verbose_level_1_logs_each_request_its_model_id_and_outcome(server: RunningServer) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    _infer_http(server, "before-verbose")  # level 0: not logged
    client.update_log_settings({"log_verbose_level": 1})
    try:
        _infer_http(server, "http-1")
        _infer_grpc(server, "grpc-1")
        with pytest.raises(InferenceServerException):
            _infer_http(server, "http-bad", shape=(1, 3))
        client.is_server_ready()
        _wait_for(lambda: "[request id: http-bad]" in server.log, "the refused request's line")
    finally:
        client.update_log_settings({"log_verbose_level": 0})
    log = server.log
    assert "before-verbose" not in log
    assert "HTTP request: POST /v2/models/identity/infer" in log
    assert "[request id: http-1] HTTP 'identity' version (policy): inputs INPUT0 FP32 [1,4]" in log
    assert (
        "[request id: http-1] HTTP 'identity' version (policy): 200, version 1, outputs OUTPUT0 FP32 [1,4]"
        in log
    )
    assert (
        "[request id: grpc-1] gRPC 'identity' version (policy): OK, version 1, outputs OUTPUT0 FP32 [1,4]"
        in log
    )
    assert "[request id: http-bad] HTTP 'identity' version (policy): inputs INPUT0 FP32 [1,3]" in log
    assert "HTTP 'identity': refused (400): [request id: http-bad] unexpected shape for input 'INPUT0'" in log
    assert "HTTP request: GET /v2/health/ready" in log
    assert "hpack" not in log  # level 1 is the server's requests, not HTTP/2 frames


def test_level_0_pays_nothing_and_logs_nothing(server: RunningServer) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    _infer_http(server, "quiet-http")
    _infer_grpc(server, "quiet-grpc")
    client.update_log_settings({"log_verbose_level": 1})
    try:
        client.is_server_live()
        _wait_for(lambda: "HTTP request: GET /v2/health/live" in server.log, "the marker request")
    finally:
        client.update_log_settings({"log_verbose_level": 0})
    log = server.log
    assert "quiet-http" not in log and "quiet-grpc" not in log


def test_start_up_flags(tmp_path_factory: pytest.TempPathFactory) -> None:
    repo = tmp_path_factory.mktemp("logging-flags")
    write_python_model(repo, "identity", "identity", max_batch_size=8, dims=[4])
    with start_server(repo, "--log-verbose=1", "--log-format=ISO8601", "--log-warning=false") as running:
        settings = httpclient.InferenceServerClient(running.http_url).get_log_settings()
        assert settings == {**DEFAULTS, "log_verbose_level": 1, "log_format": "ISO8601", "log_warning": False}
        _infer_grpc(running, "at-start")
        _wait_for(lambda: "[request id: at-start]" in running.log, "the verbose request line")
        line = next(line for line in running.log.splitlines() if "[request id: at-start]" in line)
        assert line[:20].count("-") == 2 and line[10] == "T"  # 2026-12-04T22:24:26.935Z I ...
        assert "hpack" not in running.log


def test_log_file_at_start_up(tmp_path_factory: pytest.TempPathFactory) -> None:
    repo = tmp_path_factory.mktemp("logging-file")
    write_python_model(repo, "identity", "identity", max_batch_size=8, dims=[4])
    log_file = tmp_path_factory.mktemp("logs") / "server.log"
    write_python_source(
        repo / "identity",
        """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        pb_utils.Logger.log_info("from the instance's process")
        inputs = [pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy() for r in requests]
        return [pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x)]) for x in inputs]
""",
    )
    with start_server(repo, f"--log-file={log_file}", "--log-verbose=1") as running:
        assert httpclient.InferenceServerClient(running.http_url).get_log_settings()["log_file"] == str(
            log_file
        )
        _infer_http(running, "to-file")
        _wait_for(lambda: "[request id: to-file]" in log_file.read_text(), "the request line in --log-file")
        _wait_for(
            lambda: "from the instance's process" in log_file.read_text(), "the model's line in --log-file"
        )
        assert "[request id: to-file]" not in running.log


def test_an_unwritable_log_file_stops_the_start(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "server",
            f"--model-repository={tmp_path}",
            f"--log-file={tmp_path}/no/dir.log",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "cannot be opened" in done.stderr


def test_verbose_streams_log_each_response(tmp_path: Path) -> None:
    from tests.support.triton_models import write_triton_model

    write_triton_model(tmp_path, "repeat_now", "repeat_now")
    with start_server(tmp_path, "--log-verbose=1") as running:
        client = grpcclient.InferenceServerClient(running.grpc_url)
        done: list[Any] = []
        client.start_stream(callback=lambda result, error: done.append(error or result))
        tensor = grpcclient.InferInput("IN", [1], "INT32")
        tensor.set_data_from_numpy(np.array([2], dtype=np.int32))
        client.async_stream_infer("repeat_now", [tensor], request_id="s-1")
        _wait_for(lambda: len(done) >= 2, "both responses")
        client.stop_stream()
        _wait_for(
            lambda: "s-1] gRPC stream 'repeat_now' version (policy): final response" in running.log, "final"
        )
        log = running.log
        assert "gRPC request: ModelStreamInfer" in log
        assert "[request id: s-1] gRPC stream 'repeat_now' version (policy): inputs IN INT32 [1]" in log
        assert (
            "[request id: s-1] gRPC stream 'repeat_now' version (policy): response, version 1, outputs OUT"
            in log
        )
