"""perf_analyzer 2.51 `--shared-memory system` and `tritonctl perf --shared-memory system` run clean.

Both register their own regions (inputs and outputs), send requests that name them, and unregister
at the end: no request fails, the server counts every one, and no region stays registered.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.perf_analyzer.test_perf_analyzer import (
    PA_BINARY,
    UNSTABLE,
    perf_analyzer_env,
    server_counts,
)
from tests.support.models import write_python_model
from tests.support.server import PROJECT_ROOT, RunningServer, start_server

pytestmark = [pytest.mark.integration]

MODEL = "py_identity"
DIMS = [3, 32, 32]
OUTPUT_BYTES = 4 * 3 * 32 * 32


@pytest.fixture(scope="module")
def shm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("pa_shm_repo")
    write_python_model(repo, MODEL, "identity", dims=DIMS, max_batch_size=8)
    with start_server(repo, "--allow-client-shm=true", timeout=180) as server:
        yield server


def _no_regions_left(server: RunningServer) -> None:
    status, body = server.get("/v2/systemsharedmemory/status")
    assert (status, json.loads(body)) == (200, [])


@pytest.mark.perf_analyzer
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_perf_analyzer_shared_memory(shm_server: RunningServer, tmp_path: Path, protocol: str) -> None:
    if not PA_BINARY.exists():
        pytest.skip(f"perf_analyzer is not installed at {PA_BINARY} (run `make perf-analyzer`)")
    report = tmp_path / "report.csv"
    url = shm_server.http_url if protocol == "http" else shm_server.grpc_url
    command = [
        str(PA_BINARY),
        *("-m", MODEL, "-u", url, "-i", protocol, "--concurrency-range", "2:2"),
        *("--shared-memory", "system", "--output-shared-memory-size", str(OUTPUT_BYTES)),
        *("--measurement-mode", "count_windows", "--measurement-request-count", "100"),
        *("-s", "100", "-r", "10", "-f", str(report)),
    ]
    before = server_counts(shm_server, MODEL)
    done = subprocess.run(
        command, env=perf_analyzer_env(), capture_output=True, text=True, timeout=150, check=False
    )
    output = done.stdout + done.stderr
    assert "error" not in output.lower(), output
    if done.returncode == 0:
        with report.open() as handle:
            assert float(next(csv.DictReader(handle))["Inferences/Second"]) > 0
    else:
        assert UNSTABLE in output, output
    after = server_counts(shm_server, MODEL)
    assert after["fail"] == before["fail"], "the server counted failed requests"
    assert after["success"] >= before["success"] + 100
    _no_regions_left(shm_server)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_tritonctl_perf_shared_memory(shm_server: RunningServer, tmp_path: Path, protocol: str) -> None:
    result_path = tmp_path / "perf.json"
    url = shm_server.http_url if protocol == "http" else shm_server.grpc_url
    command = [
        sys.executable,
        *("-m", "tritonctl", "perf", "run", MODEL, "-u", url, "-i", protocol),
        *("--shared-memory", "system", "--output-shared-memory-size", str(OUTPUT_BYTES)),
        *(
            "--concurrency-range",
            "2:2",
            "--request-count",
            "100",
            "-s",
            "999",
            "-r",
            "2",
            "--warmup-ms",
            "100",
        ),
        *("--json", str(result_path)),
    ]
    before = server_counts(shm_server, MODEL)
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=150, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(result_path.read_text())["results"][0]
    assert result["errors"] == 0 and result["throughput"] > 0
    after = server_counts(shm_server, MODEL)
    assert after["fail"] == before["fail"]
    assert after["success"] >= before["success"] + 200
    _no_regions_left(shm_server)
    assert not list(Path("/dev/shm").glob("tritonctl_perf_*")), "tritonctl perf left regions behind"


def test_tritonctl_perf_without_allow_client_shm_says_why(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_python_model(repo, MODEL, "identity", dims=DIMS, max_batch_size=8)
    with start_server(repo) as server:
        command = [
            sys.executable,
            *("-m", "tritonctl", "perf", "run", MODEL, "-u", server.grpc_url, "-i", "grpc"),
            *("--shared-memory", "system", "--concurrency-range", "1:1", "--request-count", "10"),
        ]
        done = subprocess.run(
            command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode != 0
        assert "--allow-client-shm" in done.stdout + done.stderr
    assert not list(Path("/dev/shm").glob("tritonctl_perf_*"))
