"""Worker crashes on the real server: in-flight requests fail fast, the instance comes back,
other models never notice, nothing is left behind; a crash loop leaves the model UNAVAILABLE
with its reason (issue #7; Triton's L0_backend_python restart/readiness, L0_lifecycle)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.integration.reliability.helpers import (
    LoadThreads,
    identity_inputs,
    shm_segments,
    wait_for,
    worker_pids,
)
from tests.support.models import INIT_FAILURE_MESSAGE, write_python_model, write_python_source
from tests.support.server import start_server

pytestmark = pytest.mark.integration

# Dies on its own a moment after every start: a model that crashes in a loop.
_DIES_AFTER_START = """\
import os
import threading


class TritonPythonModel:
    def initialize(self, args):
        threading.Timer(0.2, lambda: os._exit(7)).start()

    def execute(self, requests):
        return []
"""


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_kill_9_of_a_worker_under_load_fails_only_its_in_flight_requests(tmp_path: Path) -> None:
    write_python_model(tmp_path, "victim", "slow", delay_ms=300, dims=[4], instance_count=2)
    write_python_model(tmp_path, "bystander", "identity", dims=[4])
    shm_before = shm_segments()
    with start_server(tmp_path, "--model-control-mode=explicit", "--load-model=bystander") as server:
        client = httpclient.InferenceServerClient(server.http_url)
        bystander_pids = worker_pids(server)
        client.load_model("victim")
        victim_pids = worker_pids(server) - bystander_pids
        assert len(victim_pids) == 2 and len(bystander_pids) == 1

        load = LoadThreads(server)
        load.start("victim", 4)
        load.start("bystander", 2)
        time.sleep(1.5)  # both victim instances are busy now
        killed = min(victim_pids)
        os.kill(killed, signal.SIGKILL)
        killed_at = time.monotonic()
        took = wait_for(
            lambda: len(worker_pids(server) - bystander_pids) == 2 and killed not in worker_pids(server),
            30,
            "the killed instance to be restarted",
        )
        wait_for(lambda: client.is_model_ready("victim"), 30, "victim to be ready again")
        time.sleep(1.0)  # traffic flows through the restarted instance too
        load.stop()
        print(f"restart took {took:.1f}s after kill -9")

        victim, bystander = load.of("victim"), load.of("bystander")
        failures = [outcome for outcome in victim if not outcome.ok]
        # Only what the killed instance was executing fails (one request at a time per instance),
        # promptly, with a clear error naming the dead instance.
        assert 1 <= len(failures) <= 2, failures
        for failure in failures:
            assert failure.status in ("500", "503"), failure
            assert "victim" in failure.message and "SIGKILL" in failure.message, failure
            assert failure.seconds < 5, failure
        assert all(outcome.ok for outcome in bystander), [o for o in bystander if not o.ok][:3]
        assert sum(1 for o in victim if o.ok) > 5
        assert time.monotonic() - killed_at < 60
        assert client.is_server_ready()
        pids_while_running = worker_pids(server)
        client.close()
    wait_for(lambda: not any(running(pid) for pid in pids_while_running), 10, "every worker to exit")
    assert shm_segments() - shm_before == set()


def test_readiness_follows_the_instances_and_a_crash_loop_gives_up_with_its_reason(tmp_path: Path) -> None:
    write_python_model(tmp_path, "lonely", "identity", dims=[4])
    write_python_model(tmp_path, "other", "identity", dims=[4])
    write_python_source(write_python_model(tmp_path, "crashy", "identity", dims=[4]), _DIES_AFTER_START)
    write_python_model(tmp_path, "init_fails", "init_fails", dims=[4])
    with start_server(tmp_path, "--model-control-mode=explicit", "--load-model=other") as server:
        client = httpclient.InferenceServerClient(server.http_url)
        other_pids = worker_pids(server)
        client.load_model("lonely")
        (pid,) = worker_pids(server) - other_pids
        assert client.is_server_ready()
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not client.is_model_ready("lonely"), 5, "lonely to turn not ready")
        assert not client.is_server_ready()  # strict readiness: a model the server serves is down
        # Requests meanwhile fail fast instead of hanging; the other model never notices.
        started = time.monotonic()
        with pytest.raises(InferenceServerException) as failed:
            client.infer("lonely", identity_inputs())
        assert failed.value.status() == "503" and time.monotonic() - started < 5  # retryable
        assert "no instance is running" in failed.value.message()
        client.infer("other", identity_inputs())
        wait_for(lambda: client.is_model_ready("lonely"), 30, "lonely to be ready again")
        assert client.is_server_ready()
        client.infer("lonely", identity_inputs())

        # A model whose initialize raises is reported, not fatal.
        with pytest.raises(InferenceServerException, match=INIT_FAILURE_MESSAGE):
            client.load_model("init_fails")
        index = {entry["name"]: entry for entry in client.get_model_repository_index()}
        assert index["init_fails"]["state"] == "UNAVAILABLE"
        assert INIT_FAILURE_MESSAGE in index["init_fails"]["reason"]

        # A model that crashes after every start is restarted with backoff, then given up.
        client.load_model("crashy")

        def crashy_entry() -> dict[str, str]:
            found = [e for e in client.get_model_repository_index() if e["name"] == "crashy"]
            return found[0] if found else {}

        wait_for(lambda: crashy_entry().get("state") == "UNAVAILABLE", 60, "crashy to be given up")
        reason = crashy_entry()["reason"]
        assert "exited with code 7" in reason and "gave up" in reason, reason
        assert not client.is_model_ready("crashy")
        with pytest.raises(InferenceServerException) as failed:
            client.infer("crashy", identity_inputs())
        assert failed.value.status() in ("400", "404", "503")
        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        grpc_index = {m.name: m for m in grpc.get_model_repository_index().models}
        assert "exited with code 7" in grpc_index["crashy"].reason
        # The rest of the server never noticed.
        client.infer("other", identity_inputs())
        client.infer("lonely", identity_inputs())
        assert client.is_server_live()
        assert len(worker_pids(server)) == 2  # no process of the given-up model lingers
        client.close()
        grpc.close()
