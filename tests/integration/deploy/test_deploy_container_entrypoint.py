"""The images' `tritonserver` entry point runs the real server, outside a container.

docker/tritonserver is started with the seed's flags (plus 127.0.0.1 so the test stays local), the
image's HEALTHCHECK script finds the HTTP port on the process's command line as it would on the
container's process 1, `tritonclient` gets an answer, and SIGTERM stops everything cleanly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.support.models import write_python_model

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[3]
ENTRYPOINT = REPO_ROOT / "docker" / "tritonserver"
HEALTHCHECK = REPO_ROOT / "docker" / "healthcheck.py"
SEED_FLAGS = ["--log-verbose=1", "--backend-config=python,shm-default-size=2147483648"]


def _free_port() -> int:
    # The health check reads the port from the command line, so it cannot be 0 here.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthcheck(pid: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK)],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TRITONCTL_HEALTH_PID": str(pid)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@contextlib.contextmanager
def _entrypoint(repo: Path, http_port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    args = [
        str(ENTRYPOINT),
        f"--model-repository={repo}",
        "--host=127.0.0.1",  # after the script's 0.0.0.0, so it wins
        f"--http-port={http_port}",
        "--grpc-port=0",
        "--metrics-port=0",
        *SEED_FLAGS,
    ]
    env = {**os.environ, "TRITONCTL_PYTHON": sys.executable}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    with log.open("wb") as out:
        process = subprocess.Popen(
            args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT, start_new_session=True
        )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def test_entrypoint_serves_and_passes_the_image_healthcheck(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    write_python_model(repo, "identity", "identity")
    http_port = _free_port()
    log = tmp_path / "server.log"
    with _entrypoint(repo, http_port, log) as process:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, f"server exited early:\n{log.read_text(errors='replace')[-4000:]}"
            # The script execs python: this pid's command line is the server's, --http-port included.
            result = _healthcheck(process.pid)
            if result.returncode == 0:
                break
            assert time.monotonic() < deadline, f"never healthy: {result.stderr}\n{log.read_text()[-4000:]}"
            time.sleep(0.5)

        client = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
        data = np.arange(4, dtype=np.float32).reshape(1, 4)
        request = httpclient.InferInput("INPUT0", list(data.shape), "FP32")
        request.set_data_from_numpy(data)
        answer = client.infer("identity", [request])
        np.testing.assert_array_equal(answer.as_numpy("OUTPUT0"), data)
        client.close()

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text(errors="replace")[-4000:]
    assert _healthcheck_refused_after_exit(http_port)


def _healthcheck_refused_after_exit(http_port: int) -> bool:
    result = subprocess.run(
        [sys.executable, str(HEALTHCHECK)],
        env={
            "PATH": "/usr/bin:/bin",
            "TRITONCTL_HEALTH_URL": f"http://127.0.0.1:{http_port}/v2/health/ready",
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.returncode == 1
