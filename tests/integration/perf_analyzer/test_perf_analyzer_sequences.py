"""perf_analyzer 2.51 on stateful models: it reads the config, sees `sequence_batching`, and sends
sequences itself (START/END flags, its own ids; concurrency = live sequences). Our server must
answer every request, over HTTP and gRPC, at concurrency 8 (more sequences than some models'
slots, so the backlog is used too)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.perf_analyzer.test_perf_analyzer import (
    PA_BINARY,
    UNSTABLE,
    perf_analyzer_env,
    server_counts,
)
from tests.support.sequence_models import write_onnx_accumulator, write_python_accumulator
from tests.support.server import RunningServer, start_server

pytestmark = [pytest.mark.integration, pytest.mark.perf_analyzer]


@pytest.fixture(scope="module")
def pa_sequence_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    if not PA_BINARY.exists():
        pytest.skip(f"perf_analyzer is not installed at {PA_BINARY} (run `make perf-analyzer`)")
    repo = tmp_path_factory.mktemp("pa_sequence_repo")
    write_onnx_accumulator(repo, "seq_onnx", max_batch_size=4)  # 4 slots for 8 sequences
    write_onnx_accumulator(repo, "seq_onnx_oldest", max_batch_size=4, strategy="oldest")
    write_python_accumulator(repo, "seq_python", max_batch_size=0, instance_count=2)
    with start_server(repo, timeout=180) as server:
        yield server


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("model", ["seq_onnx", "seq_onnx_oldest", "seq_python"])
def test_perf_analyzer_sends_sequences_without_errors(
    pa_sequence_server: RunningServer, tmp_path: Path, model: str, protocol: str
) -> None:
    server = pa_sequence_server
    url = server.http_url if protocol == "http" else server.grpc_url
    command = [
        str(PA_BINARY),
        *("-m", model, "-u", url, "-i", protocol, "--concurrency-range", "8:8"),
        *("--sequence-length", "5", "--measurement-mode", "count_windows"),
        *("--measurement-request-count", "200", "-s", "100", "-r", "10", "-f", str(tmp_path / "r.csv")),
    ]
    before = server_counts(server, model)
    done = subprocess.run(
        command, env=perf_analyzer_env(), capture_output=True, text=True, timeout=120, check=False
    )
    output = done.stdout + done.stderr
    assert "error" not in output.lower(), output
    assert done.returncode == 0 or UNSTABLE in output, output
    if done.returncode == 0:
        assert "Sequence count" in output, output  # it drove the model as a sequence model
    after = server_counts(server, model)
    assert after["fail"] == before["fail"], "the server counted failed requests"
    assert after["success"] >= before["success"] + 200
