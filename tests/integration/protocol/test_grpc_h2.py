"""The whole gRPC protocol suite (test_protocol_grpc.py) again, on the lean HTTP/2 stack.

`--grpc-stack=h2` swaps grpc.aio for server/protocol/grpc/h2server.py; every RPC must behave the
same through tritonclient.grpc and the raw stubs. The tests are imported, so they run twice: once
per stack. Restricted-protocol headers and perf_analyzer over gRPC are checked here too.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.integration.perf_analyzer.test_perf_analyzer import PA_BINARY, perf_analyzer_env, server_counts
from tests.integration.protocol.conftest import STARTUP_MODELS, write_protocol_repository
from tests.integration.protocol.test_protocol_grpc import *  # noqa: F403 - the suite, on this stack
from tests.support.models import write_python_model
from tests.support.server import RunningServer, start_server

pytestmark = pytest.mark.integration
H2 = "--grpc-stack=h2"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Overrides the session server of conftest.py: same models, h2 stack."""
    repo = tmp_path_factory.mktemp("h2_protocol_repo")
    write_protocol_repository(repo)
    loads = [f"--load-model={name}" for name in STARTUP_MODELS]
    with start_server(repo, H2, "--model-control-mode=explicit", *loads, timeout=180) as running:
        yield running


def test_the_h2_stack_is_the_one_answering(server: RunningServer) -> None:
    assert "lean HTTP/2 stack" in server.log


def test_restricted_protocol_applies_on_h2(tmp_path: Path) -> None:
    write_python_model(tmp_path, "identity", "identity", dims=[4])
    restricted = "--grpc-restricted-protocol=model-config,statistics:admin-key=s3cret"
    with start_server(tmp_path, H2, restricted) as running:
        client = grpcclient.InferenceServerClient(running.grpc_url)
        for headers in (None, {"triton-grpc-protocol-admin-key": "wrong"}):
            with pytest.raises(InferenceServerException) as failed:
                client.get_model_config("identity", headers=headers)
            assert failed.value.status() == "StatusCode.UNAVAILABLE"
            assert failed.value.message() == (
                "This protocol is restricted, expecting header 'triton-grpc-protocol-admin-key'"
            )
        admin = {"triton-grpc-protocol-admin-key": "s3cret"}
        assert client.get_model_config("identity", headers=admin).config.name == "identity"
        assert client.get_inference_statistics("identity", headers=admin).model_stats
        tensor = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 4), np.float32))
        assert client.infer("identity", [tensor]).as_numpy("OUTPUT0").tolist() == [[1.0] * 4]


@pytest.mark.perf_analyzer
@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "streaming"])
def test_perf_analyzer_over_h2_has_no_errors(server: RunningServer, tmp_path: Path, streaming: bool) -> None:
    if not PA_BINARY.exists():
        pytest.skip(f"perf_analyzer is not installed at {PA_BINARY} (run `make perf-analyzer`)")
    model = "py_identity"
    command = [
        str(PA_BINARY),
        *("-m", model, "-u", server.grpc_url, "-i", "grpc", "--concurrency-range", "8:8"),
        *("--measurement-mode", "count_windows", "--measurement-request-count", "200"),
        *("-s", "100", "-r", "10", *(["--streaming"] if streaming else [])),
    ]
    before = server_counts(server, model)
    done = subprocess.run(
        command, env=perf_analyzer_env(), capture_output=True, text=True, timeout=100, check=False
    )
    output = done.stdout + done.stderr
    assert "error" not in output.lower(), output
    assert done.returncode == 0 or "Failed to obtain stable measurement" in output, output
    after = server_counts(server, model)
    assert after["fail"] == before["fail"], "the server counted failed requests"
    assert after["success"] >= before["success"] + 200
