"""Start and stop the systems under test on 127.0.0.1 with free ports: ours, the real Triton, MLServer.

`start_*` return a running System and wait until it is ready; `time_to_ready` starts a server
only to time its start-up (P4), polling readiness every 10 ms so both sides are timed alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from benchmarks.peers.tools import ROOT, Tools

sys.path.insert(0, str(ROOT))
from tests.tools import real_triton

HOST = "127.0.0.1"
OURS = "ours"
TRITON = "triton"
MLSERVER = "mlserver"
READY_POLL_S = 0.01
SHM = Path("/dev/shm")
TRITON_REGION = "triton_python_backend_shm_region_"


@dataclass
class System:
    """One running server and how to reach and stop it."""

    name: str
    grpc_url: str
    http_url: str
    pid: int
    stop: Callable[[], None]

    def url(self, protocol: str) -> str:
        return self.grpc_url if protocol == "grpc" else self.http_url


def _spawn(command: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """A server in a session of its own (so its whole group can be stopped), output to log_path."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def start_ours(
    repo: Path, tools: Tools, timeout_s: float = 300.0, extra_args: list[str] | None = None
) -> System:
    """`python -m server` from `tools.ours_code` on free ports, stopped with SIGTERM then its group killed."""
    ports = [real_triton.free_port(HOST) for _ in range(3)]
    command, env = _ours_command(repo, ports, tools.ours_code)
    command += extra_args or []
    log_path = Path(tempfile.mkstemp(prefix="peers-ours-", suffix=".log")[1])
    process = _spawn(command, env, tools.ours_code, log_path)

    def stop() -> None:
        _stop_group(process)
        log_path.unlink(missing_ok=True)

    try:
        _wait_ready(process, f"{HOST}:{ports[0]}", log_path, timeout_s)
    except BaseException:
        stop()
        raise
    return System(OURS, f"{HOST}:{ports[1]}", f"{HOST}:{ports[0]}", process.pid, stop)


def _triton_regions() -> set[str]:
    return {path.name for path in SHM.glob(f"{TRITON_REGION}*")}


def _remove_leaked_regions(before: set[str]) -> None:
    """Delete the python backend's shared-memory regions a crashed or killed Triton of ours left behind.

    Only regions that appeared since `before` and that no live process names on its command line
    (each stub gets its region as an argument) go: other engineers' Tritons keep theirs.
    """
    leaked = _triton_regions() - before
    if not leaked:
        return
    for process in psutil.process_iter(["cmdline"]):
        leaked -= set(process.info["cmdline"] or ())
    for name in leaked:
        with contextlib.suppress(OSError):
            (SHM / name).unlink()


def start_triton(
    repo: Path, tools: Tools, timeout_s: float = 300.0, extra_args: list[str] | None = None
) -> System:
    install = real_triton.find_real_triton(tools.triton_venv)
    before = _triton_regions()
    try:
        server = real_triton.launch_real_triton(
            repo, install=install, startup_timeout=timeout_s, extra_args=extra_args
        )
    except BaseException:
        _remove_leaked_regions(before)
        raise

    def stop() -> None:
        server.stop()
        _remove_leaked_regions(before)

    return System(TRITON, server.grpc_url, server.http_url, server.process.pid, stop)


def _ready(http_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{http_url}/v2/health/ready", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _stop_group(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """SIGTERM the process, then SIGKILL its whole group (workers, stubs) whatever happened."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)


def _wait_ready(process: subprocess.Popen[bytes], http_url: str, log: Path, timeout_s: float) -> float:
    """Seconds from now until `http_url` answers ready; raises with the log tail on exit or timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if process.poll() is not None:
            raise RuntimeError(
                f"server exited with {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}"
            )
        if _ready(http_url):
            return time.monotonic() - started
        time.sleep(READY_POLL_S)
    raise TimeoutError(f"not ready after {timeout_s:.0f}s:\n{log.read_text(errors='replace')[-3000:]}")


def start_mlserver(folder: Path, tools: Tools, parallel_workers: int, timeout_s: float = 120.0) -> System:
    """`mlserver start folder` with a settings.json on free ports (the models are folders inside)."""
    ports = [real_triton.free_port(HOST) for _ in range(3)]
    settings = {
        "host": HOST,
        "http_port": ports[0],
        "grpc_port": ports[1],
        "metrics_port": ports[2],
        "parallel_workers": parallel_workers,
        "debug": False,
    }
    (folder / "settings.json").write_text(json.dumps(settings, indent=2))
    env = dict(os.environ, PATH=os.pathsep.join((str(tools.mlserver.parent), os.environ.get("PATH", ""))))
    env["PYTHONPATH"] = str(folder)  # the custom runtime module, for the workers too
    log_path = folder / "mlserver.log"
    process = _spawn([str(tools.mlserver), "start", str(folder)], env, folder, log_path)
    http_url = f"{HOST}:{ports[0]}"
    try:
        _wait_ready(process, http_url, log_path, timeout_s)
    except BaseException:
        _stop_group(process)
        raise
    return System(MLSERVER, f"{HOST}:{ports[1]}", http_url, process.pid, lambda: _stop_group(process))


def _ours_command(repo: Path, ports: list[int], code: Path) -> tuple[list[str], dict[str, str]]:
    command = [
        sys.executable,
        *("-m", "server", f"--model-repository={repo}"),
        *(f"--{name}-address={HOST}" for name in ("http", "grpc", "metrics")),
        *(f"--{name}-port={port}" for name, port in zip(("http", "grpc", "metrics"), ports, strict=True)),
    ]
    env = dict(os.environ, PYTHONPATH=str(code))
    return command, env


def _triton_command(
    repo: Path, ports: list[int], tools: Tools, work: Path
) -> tuple[list[str], dict[str, str]]:
    install = real_triton.find_real_triton(tools.triton_venv)
    if install is None:
        raise FileNotFoundError(f"no real Triton under {tools.triton_venv}")
    backends = real_triton._backend_directory(install, work)  # same layout launch_real_triton builds
    command = [
        str(install.server_binary),
        f"--model-repository={repo}",
        f"--backend-directory={backends}",
        *(f"--{name}-address={HOST}" for name in ("http", "grpc", "metrics")),
        *(f"--{name}-port={port}" for name, port in zip(("http", "grpc", "metrics"), ports, strict=True)),
    ]
    return command, real_triton._environment(install)


def time_to_ready(name: str, repo: Path, tools: Tools, timeout_s: float = 600.0) -> float:
    """Seconds from process start until /v2/health/ready answers 200, then stop the server."""
    with tempfile.TemporaryDirectory(prefix="peers-ready-") as folder:
        work = Path(folder)
        ports = [real_triton.free_port(HOST) for _ in range(3)]
        if name == OURS:
            command, env = _ours_command(repo, ports, tools.ours_code)
        else:
            command, env = _triton_command(repo, ports, tools, work)
        log_path = work / "server.log"
        regions = _triton_regions()
        process = _spawn(command, env, tools.ours_code, log_path)
        try:
            return _wait_ready(process, f"{HOST}:{ports[0]}", log_path, timeout_s)
        finally:
            _stop_group(process)
            _remove_leaked_regions(regions)


def idle_cpu_percent(pid: int, seconds: float = 2.0) -> float:
    """CPU % the process tree burns while no load runs (a busy-polling idle server would skew the others)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    before = {}
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            before[process.pid] = times.user + times.system
    time.sleep(seconds)
    used = 0.0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            used += times.user + times.system - before.get(process.pid, 0.0)
    return 100.0 * used / seconds
