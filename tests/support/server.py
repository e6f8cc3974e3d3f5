"""Run the real server (`python -m server`, Triton's flags) as a subprocess for integration tests.

    with start_server(repo) as server:                       # waits for /v2/health/ready
        httpclient.InferenceServerClient(server.http_url)
    with start_server(repo, "--model-control-mode=explicit", "--load-model=add_sub") as server: ...

Ports: the server binds port 0 for HTTP, gRPC and metrics and reports the ports it got through
TRITONCTL_PORTS_FILE, so parallel test runs never race for a port. It binds 127.0.0.1 only.
Readiness: start_server waits for `/v2/health/ready`, or only `/v2/health/live` in explicit mode
or with `--exit-on-error=false` (a model may fail on purpose there; the front ends start only
after the start-up loads, so live already means "loads done"). If the process exits or the wait
times out, the error carries the server's log. At exit the server gets SIGTERM (graceful), then
its whole process group is killed, so no worker outlives a test.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


@dataclass
class RunningServer:
    """A server subprocess and where to reach it."""

    process: subprocess.Popen[bytes]
    log_path: Path
    http_port: int = 0
    grpc_port: int = 0
    metrics_port: int = 0
    _workdir: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    @property
    def http_url(self) -> str:
        return f"{HOST}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"{HOST}:{self.metrics_port}"

    @property
    def log(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """A plain HTTP GET on the server (status, body); connection errors give status 0."""
        try:
            with urllib.request.urlopen(f"http://{self.http_url}{path}", timeout=timeout) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()
        except (OSError, urllib.error.URLError):
            return 0, b""

    def wait_until(self, path: str, timeout: float) -> None:
        """Poll `path` until it answers 200; raise with the log if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited with code {self.process.returncode} before {path} answered 200:\n"
                    f"{self.log[-6000:]}"
                )
            if self.http_port and self.get(path, timeout=2.0)[0] == 200:
                return
            time.sleep(0.1)
        raise TimeoutError(f"server: {path} did not answer 200 within {timeout:.0f}s:\n{self.log[-6000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the server and wait for it; returns its exit code (kills the group if it hangs)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.process.wait())

    def close(self) -> None:
        """Stop gracefully if still running, kill the process group, remove the log folder."""
        try:
            self.stop(timeout=30.0)
        finally:
            self.kill()
            if self._workdir is not None:
                self._workdir.cleanup()
                self._workdir = None

    def kill(self) -> None:
        """SIGKILL the server's whole process group (the server and every worker it started)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


def _read_ports(ports_file: Path, server: RunningServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ports_file.is_file():
            text = ports_file.read_text(encoding="utf-8")
            if text:
                ports = json.loads(text)
                server.http_port = int(ports.get("http", 0))
                server.grpc_port = int(ports.get("grpc", 0))
                server.metrics_port = int(ports.get("metrics", 0))
                return
        if server.process.poll() is not None:
            raise RuntimeError(
                f"server exited with code {server.process.returncode} during start-up:\n{server.log[-6000:]}"
            )
        time.sleep(0.05)
    raise TimeoutError(f"server did not start its front ends within {timeout:.0f}s:\n{server.log[-6000:]}")


def launch_server(
    repo: Path | None,
    *extra_args: str,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    wait_for: str | None = None,
    entry: str = "server",
) -> RunningServer:
    """Start the server and wait until it is up (see module doc); the caller must `close()` it.

    `repo` None: pass the repositories in extra_args yourself. `wait_for`: "ready", "live" or
    "none"; by default "ready", except "live" in explicit mode or with --exit-on-error=false.
    `entry`: "server" runs `python -m server` (Triton's flags), "tritonctl" runs `tritonctl serve`.
    """
    workdir = tempfile.TemporaryDirectory(prefix="tritonctl-test-server-")
    ports_file = Path(workdir.name) / "ports.json"
    log_path = Path(workdir.name) / "server.log"
    if entry == "tritonctl":
        args = [sys.executable, "-m", "tritonctl", "serve", f"--host={HOST}"]
    else:
        args = [
            sys.executable,
            "-m",
            "server",
            *(f"--{name}-address={HOST}" for name in ("http", "grpc", "metrics")),
        ]
    if repo is not None:
        args.append(f"--model-repository={repo}")
    args += ["--http-port=0", "--grpc-port=0", "--metrics-port=0", *extra_args]
    process_env = {**os.environ, **(env or {})}
    process_env["TRITONCTL_PORTS_FILE"] = str(ports_file)
    process_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(PROJECT_ROOT), process_env.get("PYTHONPATH")])
    )
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            args,
            cwd=PROJECT_ROOT,
            env=process_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: one killpg reaches every worker
        )
    server = RunningServer(process, log_path, _workdir=workdir)
    try:
        started = time.monotonic()
        _read_ports(ports_file, server, timeout)
        if wait_for is None:
            relaxed = "--model-control-mode=explicit" in extra_args or "--exit-on-error=false" in extra_args
            wait_for = "live" if relaxed else "ready"
        if wait_for != "none" and server.http_port:
            server.wait_until(f"/v2/health/{wait_for}", max(timeout - (time.monotonic() - started), 1.0))
    except BaseException:
        server.kill()
        workdir.cleanup()
        raise
    return server


@contextlib.contextmanager
def start_server(
    repo: Path | None,
    *extra_args: str,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    wait_for: str | None = None,
    entry: str = "server",
) -> Iterator[RunningServer]:
    """Context manager around launch_server: always stops the server and kills its process group."""
    server = launch_server(repo, *extra_args, env=env, timeout=timeout, wait_for=wait_for, entry=entry)
    try:
        yield server
    except BaseException:
        print(f"--- server log (tail) ---\n{server.log[-4000:]}")  # shown by pytest on failure
        raise
    finally:
        server.close()


def send_raw(port: int, payload: bytes, timeout: float = 15.0) -> bytes:
    """Send bytes on a fresh connection to 127.0.0.1:port; everything the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)
