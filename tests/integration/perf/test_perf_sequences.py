"""`tritonctl perf` on stateful models: it sees `sequence_batching` in the config and sends whole
sequences (START ... END, its own ids), one live sequence per unit of concurrency, like
perf_analyzer. A request outside a live sequence would be refused by the server, so zero errors
mean every request carried the right flags and id."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.support.sequence_models import write_onnx_accumulator, write_python_accumulator
from tests.support.server import RunningServer, start_server
from tritonctl.cli.main import app

pytestmark = pytest.mark.integration

QUICK = ["-p", "300", "--warmup-ms", "100", "-r", "3", "-s", "100", "--workers", "1"]


@pytest.fixture(scope="module")
def seq_perf_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("perf_sequences")
    write_onnx_accumulator(repo, "seq_onnx", max_batch_size=4)  # 4 slots for 6 live sequences
    write_python_accumulator(repo, "seq_python", max_batch_size=0)
    with start_server(repo, timeout=120) as server:
        yield server


def _server_counts(server: RunningServer, model: str) -> tuple[int, int]:
    status, body = server.get(f"/v2/models/{model}/stats")
    assert status == 200, body
    stats = json.loads(body)["model_stats"][0]["inference_stats"]
    return int(stats["success"]["count"]), int(stats["fail"]["count"])


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("model", ["seq_onnx", "seq_python"])
def test_perf_drives_sequence_models_with_sequences(
    seq_perf_server: RunningServer, tmp_path: Path, protocol: str, model: str
) -> None:
    url = seq_perf_server.grpc_url if protocol == "grpc" else seq_perf_server.http_url
    out = tmp_path / "seq.json"
    before = _server_counts(seq_perf_server, model)
    result = CliRunner().invoke(
        app,
        [
            "perf",
            model,
            "-u",
            url,
            "-i",
            protocol,
            "--concurrency-range",
            "6",
            *QUICK,
            "--sequence-length",
            "5",
            "--sequence-id-range",
            "100:10000",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(out.read_text())["results"]
    assert entry["errors"] == 0 and entry["throughput"] > 0
    success, failed = _server_counts(seq_perf_server, model)
    # Only requests still queued when the run stops may fail (cancelled as its connections close).
    assert failed - before[1] <= 6 and success > before[0]


def test_perf_refuses_request_rates_on_a_sequence_model(seq_perf_server: RunningServer) -> None:
    result = CliRunner().invoke(
        app, ["perf", "seq_onnx", "-u", seq_perf_server.grpc_url, "--request-rate-range", "10", *QUICK]
    )
    assert result.exit_code != 0 and "--concurrency-range" in result.output
