"""Triton's generate extension over HTTP: /generate and /generate_stream (server-sent events) on
decoupled and default-mode models, read with curl -N, http.client and `tritonctl infer --stream`:
each event arrives as the model sends it; errors before the first event keep their status, after
it they are an `{"error": ...}` event; a client that goes away cancels the request."""

from __future__ import annotations

import contextlib
import http.client
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support.events import wait_until
from tests.support.server import HOST, RunningServer, start_server
from tests.support.triton_models import write_triton_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("generate_repo")
    write_triton_model(repo, "repeat", "repeat")
    write_triton_model(repo, "repeat_now", "repeat_now")
    write_triton_model(repo, "sender", "sender")
    write_triton_model(repo, "watch", "watch")
    with start_server(repo, timeout=120) as running:
        yield running


@contextlib.contextmanager
def _post(server: RunningServer, path: str, body: object) -> Iterator[http.client.HTTPResponse]:
    connection = http.client.HTTPConnection(HOST, server.http_port, timeout=30)
    try:
        connection.request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        yield connection.getresponse()
    finally:
        connection.close()


def _events(response: http.client.HTTPResponse) -> Iterator[dict[str, object]]:
    while line := response.readline():
        if line.startswith(b"data: "):
            yield json.loads(line[6:])


def test_curl_sees_each_event_of_a_decoupled_model(server: RunningServer) -> None:
    out = subprocess.run(
        [
            "curl",
            "-sN",
            "-X",
            "POST",
            f"http://{server.http_url}/v2/models/repeat/generate_stream",
            "-d",
            '{"IN": 3, "temperature": 0.5}',
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    events = [json.loads(line[6:]) for line in out.splitlines() if line.startswith("data: ")]
    assert events == [{"model_name": "repeat", "model_version": "1", "OUT": i} for i in range(3)]


def test_events_arrive_as_the_model_sends_them(server: RunningServer) -> None:
    with _post(
        server, "/v2/models/repeat/versions/1/generate_stream", {"IN": 2, "DELAY_MS": 300}
    ) as response:
        assert response.status == 200
        assert response.getheader("Content-Type") == "text/event-stream; charset=utf-8"
        events = _events(response)
        assert next(events)["OUT"] == 0  # before the model has sent the second one (300 ms later)
        assert next(events)["OUT"] == 1
        assert list(events) == []


def test_generate_answers_one_response_and_maps_inputs_and_outputs(server: RunningServer) -> None:
    body = {"IN": [1.5, 2], "parameters": {"p": 1}, "x": "y"}
    with _post(server, "/v2/models/sender/generate", body) as response:
        assert response.status == 200
        assert json.loads(response.read()) == {
            "model_name": "sender",
            "model_version": "1",
            "OUT": [1.5, 2.0],
        }
    with _post(server, "/v2/models/repeat/generate", {"IN": 1}) as response:
        assert json.loads(response.read())["OUT"] == 0
    with _post(server, "/v2/models/repeat/generate", {"IN": 2}) as response:
        assert response.status == 400
        assert "exactly one response" in json.loads(response.read())["error"]


def test_errors_before_and_after_the_first_event(server: RunningServer) -> None:
    with _post(server, "/v2/models/nope/generate_stream", {"IN": 1}) as response:
        assert response.status == 404
    with _post(server, "/v2/models/repeat/generate_stream", {"IN": "x"}) as response:
        assert response.status == 400 and "INT32" in json.loads(response.read())["error"]
    with _post(server, "/v2/models/repeat_now/generate_stream", {"IN": -2}) as response:
        assert response.status == 200
        assert list(_events(response)) == [
            {"model_name": "repeat_now", "model_version": "1", "OUT": 0},
            {"error": "cannot repeat -2 times"},
        ]


def test_a_client_leaving_the_stream_cancels_the_request(server: RunningServer) -> None:
    with _post(server, "/v2/models/watch/generate_stream", {"IN": 1, "id": "sse-leaves"}) as response:
        assert next(_events(response))["OUT"] == 1
    # the connection went away mid-stream
    wait_until(lambda: "cancelled sse-leaves: True" in server.log, "the model to see the cancellation")


def test_tritonctl_infer_stream_prints_a_json_line_per_response(server: RunningServer) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tritonctl",
            "infer",
            "repeat",
            "--stream",
            "-u",
            server.http_url,
            "-I",
            "IN=2",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["OUT"] for line in out.stdout.splitlines()] == [0, 1]
    failed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tritonctl",
            "infer",
            "repeat_now",
            "--stream",
            "-u",
            server.http_url,
            "-I",
            "IN=-1",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failed.returncode == 1 and "cannot repeat -1 times" in failed.stderr
