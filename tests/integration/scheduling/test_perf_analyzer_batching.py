"""perf_analyzer at concurrency 16 against the ONNX MLP with dynamic_batching: its server-side
breakdown (read from our statistics extension) shows batching and real queue/compute numbers."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.models import write_onnx_model
from tests.support.server import PROJECT_ROOT, RunningServer, start_server

PA_VENV = PROJECT_ROOT / ".tools" / "pa"
PERF_ANALYZER = PA_VENV / "bin" / "perf_analyzer"
CUDA_RUNTIME = PA_VENV / "lib" / "python3.11" / "site-packages" / "nvidia" / "cuda_runtime" / "lib"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.perf_analyzer,
    pytest.mark.skipif(not PERF_ANALYZER.exists(), reason="perf_analyzer not installed (make perf-analyzer)"),
]


@pytest.fixture(scope="module")
def mlp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("mlp_repo")
    write_onnx_model(
        repo, "mlp", "mlp", max_batch_size=16, dynamic_batching={"max_queue_delay_microseconds": 500}
    )
    with start_server(repo) as running:
        yield running


def run_perf_analyzer(server: RunningServer, csv: Path, *args: str) -> str:
    env = dict(os.environ, LD_LIBRARY_PATH=str(CUDA_RUNTIME))
    command = [str(PERF_ANALYZER), "-m", "mlp", "-u", server.grpc_url, "-i", "grpc", "-f", str(csv), *args]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    return done.stdout


def test_perf_analyzer_sees_batching_in_the_server_side_breakdown(
    mlp_server: RunningServer, tmp_path: Path
) -> None:
    output = run_perf_analyzer(
        mlp_server,
        tmp_path / "mlp.csv",
        "--concurrency-range",
        "16:16",
        # Shared CI cores: count windows and a loose stability bar keep the run short and finite.
        "--measurement-mode",
        "count_windows",
        "--measurement-request-count",
        "400",
        "--stability-percentage",
        "999",
        "--max-trials",
        "3",
    )
    inferences = int(re.search(r"Inference count: (\d+)", output).group(1))  # type: ignore[union-attr]
    executions = int(re.search(r"Execution count: (\d+)", output).group(1))  # type: ignore[union-attr]
    assert executions < inferences * 0.8, output  # several requests per execution
    breakdown = re.search(r"queue (\d+) usec \+ compute input (\d+) usec \+ compute infer (\d+) usec", output)
    assert breakdown is not None, output
    assert int(breakdown.group(3)) > 0  # real compute numbers from our statistics
    header, row = (tmp_path / "mlp.csv").read_text().splitlines()[:2]
    columns = dict(zip(header.split(","), row.split(","), strict=True))
    assert float(columns["Inferences/Second"]) > 0
    assert int(columns["Server Compute Infer"]) > 0
