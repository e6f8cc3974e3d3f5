"""`tritonctl perf` against a KServe v2 server that is not Triton: JSON tensors only, no config and
no statistics endpoint (as MLServer). A minimal stand-in runs in a thread; it is not our server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tritonctl.cli.main import app

pytestmark = pytest.mark.integration

# model name -> metadata inputs ("bare" describes nothing: shapes and types must come from flags)
METADATA = {
    "doubler": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
    "bare": [],
}


class KServeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like every real server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")  # v2 models NAME [config|stats]
        if len(parts) == 3 and parts[2] in METADATA:
            outputs = [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}]
            self._send(
                200,
                {"name": parts[2], "platform": "stand-in", "inputs": METADATA[parts[2]], "outputs": outputs},
            )
        else:
            self._send(404, {"error": f"not found: {self.path}"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if "Inference-Header-Content-Length" in self.headers:
            self._send(400, {"error": "binary tensor extension not supported"})
            return
        tensor = json.loads(body)["inputs"][0]
        data = [2 * float(v) for v in tensor["data"]]
        self._send(
            200, {"outputs": [{"name": "y", "datatype": "FP32", "shape": tensor["shape"], "data": data}]}
        )


@pytest.fixture(scope="module")
def foreign_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), KServeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


QUICK = ["-i", "http", "--http-encoding", "json", "-p", "250", "--warmup-ms", "50", "-r", "3", "-s", "80"]


def test_runs_without_statistics_or_config(foreign_url: str, tmp_path: Path) -> None:
    out = tmp_path / "foreign.json"
    result = CliRunner().invoke(
        app, ["perf", "doubler", "-u", foreign_url, "-b", "2", *QUICK, "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "no statistics endpoint" in result.output
    (entry,) = json.loads(out.read_text())["results"]
    assert entry["server_us"] is None and entry["errors"] == 0 and entry["throughput"] > 0
    assert entry["latency_us"]["p50"] <= entry["latency_us"]["p99"]


def test_flags_describe_what_the_server_does_not(foreign_url: str) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["perf", "bare", "-u", foreign_url, *QUICK])
    assert result.exit_code == 2 and "--shape NAME:DIMS" in result.output
    result = runner.invoke(
        app, ["perf", "bare", "-u", foreign_url, "--shape", "x:1,4", "--dtype", "x:FP32", *QUICK]
    )
    assert result.exit_code == 0, result.output


def test_binary_encoding_is_refused_clearly(foreign_url: str) -> None:
    args = ["perf", "doubler", "-u", foreign_url, "-i", "http", "-p", "200", "--warmup-ms", "0", "-r", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "binary tensor extension not supported" in result.output
