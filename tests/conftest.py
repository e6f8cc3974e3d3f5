"""Session-wide guards shared by every test area."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

# Every process this session starts (servers, their workers) inherits the marker, so the leak check
# below sees only our own leftovers even when other test sessions share the machine.
SESSION_MARKER = "TRITONCTL_TEST_SESSION"
os.environ.setdefault(SESSION_MARKER, uuid.uuid4().hex)

_SHM = Path("/dev/shm")
_WORKER_MODULE = "server.workers.main"


def _our_shm_segments() -> set[str]:
    if not _SHM.is_dir():
        return set()
    return {path.name for path in _SHM.iterdir() if path.name.startswith("tritonctl_")}


def leftover_workers() -> list[psutil.Process]:
    """Worker processes of this test session that are still running."""
    marker = os.environ[SESSION_MARKER]
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if _WORKER_MODULE not in (process.info["cmdline"] or []):
                continue
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            if process.environ().get(SESSION_MARKER) == marker:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.fixture(scope="session", autouse=True)
def no_leaked_workers_or_shared_memory() -> Iterator[None]:
    """Fail the session if worker processes or tritonctl shared-memory segments outlive it."""
    before = _our_shm_segments()
    yield
    deadline = time.monotonic() + 10
    while leftover_workers() and time.monotonic() < deadline:
        time.sleep(0.2)
    workers = leftover_workers()
    segments = _our_shm_segments() - before
    for process in workers:
        process.kill()
    problems = []
    if workers:
        problems.append(f"worker processes still running: {[p.pid for p in workers]}")
    if segments:
        problems.append(f"shared memory left in /dev/shm: {sorted(segments)}")
    if problems:
        pytest.fail("; ".join(problems))


@pytest.fixture(scope="session", autouse=True)
def no_state_in_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A rollout a test runs without --state-file records under this session's temporary folder,
    never in the user's ~/.local/state (servers and CLIs it starts inherit the variables)."""
    saved = {name: os.environ.get(name) for name in ("TRITONCTL_ROLLOUT_STATE", "XDG_STATE_HOME")}
    state = tmp_path_factory.mktemp("state")
    os.environ["TRITONCTL_ROLLOUT_STATE"] = str(state / "rollouts.json")
    os.environ["XDG_STATE_HOME"] = str(state)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
