"""The images' `tritonserver` entry point and HEALTHCHECK script, run outside a container."""

from __future__ import annotations

import http.server
import importlib.util
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest

from server.options import parse_tritonserver_args
from tritonctl.deploy.pod import ENTRYPOINT_DEFAULT_ARGS, HEALTH_READY_PATH

REPO_ROOT = Path(__file__).resolve().parents[3]
HEALTHCHECK = REPO_ROOT / "docker" / "healthcheck.py"
RunEntrypoint = Callable[[list[str]], list[str]]
# The seed's command line, after the image name.
SEED_ARGS = [
    "--model-repository=/models",
    "--log-verbose=1",
    "--backend-config=python,shm-default-size=2147483648",
]


def test_entrypoint_runs_the_server_module_with_the_seed_args(run_entrypoint: RunEntrypoint) -> None:
    argv = run_entrypoint(SEED_ARGS)
    assert argv == ["-m", "server", *ENTRYPOINT_DEFAULT_ARGS, *SEED_ARGS]
    assert ENTRYPOINT_DEFAULT_ARGS == ("--host=0.0.0.0",)
    options = parse_tritonserver_args(argv[2:])
    assert [str(path) for path in options.model_repositories] == ["/models"]
    assert options.log_verbose == 1
    assert options.backend_config == ["python,shm-default-size=2147483648"]
    # `docker run -p 8000:8000 -p 8001:8001 -p 8002:8002` reaches these.
    assert (options.http_port, options.grpc_port, options.metrics_port) == (8000, 8001, 8002)
    assert (options.http_host, options.grpc_host, options.metrics_host) == ("0.0.0.0",) * 3


def test_an_explicit_address_wins_over_the_container_default(run_entrypoint: RunEntrypoint) -> None:
    options = parse_tritonserver_args(
        run_entrypoint(["--model-repository=/models", "--host=127.0.0.1", "--metrics-address=10.0.0.1"])[2:]
    )
    assert (options.http_host, options.grpc_host, options.metrics_host) == (
        "127.0.0.1",
        "127.0.0.1",
        "10.0.0.1",
    )


def test_arguments_with_spaces_pass_through_untouched(run_entrypoint: RunEntrypoint) -> None:
    assert run_entrypoint(["--model-repository=/my models"])[3:] == ["--model-repository=/my models"]


def test_entrypoint_fails_loudly_without_python(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(REPO_ROOT / "docker" / "tritonserver")],
        env={"PATH": "/usr/bin:/bin", "TRITONCTL_PYTHON": str(tmp_path / "missing-python")},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0


# --- HEALTHCHECK ---------------------------------------------------------------------------------


def _healthcheck_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tritonctl_image_healthcheck", HEALTHCHECK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_healthcheck_probes_the_same_path_as_the_manifests() -> None:
    assert _healthcheck_module().READY_PATH == HEALTH_READY_PATH


@pytest.mark.parametrize(
    ("argv", "port"),
    [
        (["tini", "--", "tritonserver", "--model-repository=/models"], 8000),
        (["tini", "--", "tritonserver", "--http-port=9000"], 9000),
        (["tini", "--", "tritonserver", "--http-port", "9001", "--grpc-port=9002"], 9001),
        (["tritonserver", "--http-port=1", "--http-port=2"], 2),
    ],
)
def test_healthcheck_finds_the_http_port_on_the_command_line(argv: list[str], port: int) -> None:
    assert _healthcheck_module().http_port(argv) == port


class _HealthHandler(http.server.BaseHTTPRequestHandler):
    status = 200
    paths: list[str] = []  # per subclass: what the health check asked for

    def do_GET(self) -> None:
        self.paths.append(self.path)
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def _health_server(status: int) -> Iterator[tuple[int, list[str]]]:
    handler: type[_HealthHandler] = type("Handler", (_HealthHandler,), {"status": status, "paths": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler.paths
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _run_healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK)],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture
def server_like_process() -> Iterator[Callable[[int], str]]:
    """A process whose command line carries `--http-port=N`, as the container's process 1 does."""
    started: list[subprocess.Popen[bytes]] = []

    def start(port: int) -> str:
        process = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)", "tritonserver", f"--http-port={port}"]
        )
        started.append(process)
        return str(process.pid)

    yield start
    for process in started:
        process.kill()
        process.wait(timeout=10)


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads /proc like the container does")
def test_healthcheck_is_healthy_when_ready_on_the_servers_port(
    server_like_process: Callable[[int], str],
) -> None:
    with _health_server(200) as (port, paths):
        result = _run_healthcheck({"TRITONCTL_HEALTH_PID": server_like_process(port)})
    assert result.returncode == 0, result.stderr
    assert paths == [HEALTH_READY_PATH]


def test_healthcheck_is_unhealthy_while_not_ready() -> None:
    with _health_server(503) as (port, _):
        result = _run_healthcheck({"TRITONCTL_HEALTH_URL": f"http://127.0.0.1:{port}{HEALTH_READY_PATH}"})
    assert result.returncode == 1
    assert "503" in result.stderr


def test_healthcheck_is_unhealthy_when_nothing_listens() -> None:
    with _health_server(200) as (port, _):
        pass  # closed again: nothing listens on the port now
    result = _run_healthcheck({"TRITONCTL_HEALTH_URL": f"http://127.0.0.1:{port}{HEALTH_READY_PATH}"})
    assert result.returncode == 1
    assert "not ready" in result.stderr


def test_healthcheck_ignores_proxy_settings() -> None:
    with _health_server(200) as (port, _):
        result = _run_healthcheck(
            {
                "TRITONCTL_HEALTH_URL": f"http://127.0.0.1:{port}{HEALTH_READY_PATH}",
                "http_proxy": "http://127.0.0.1:9",
                "HTTP_PROXY": "http://127.0.0.1:9",
            }
        )
    assert result.returncode == 0, result.stderr
