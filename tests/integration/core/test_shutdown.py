"""SIGTERM/SIGINT on the real server: in-flight requests finish, workers stop, the exit code is 0;
--exit-timeout-secs bounds the wait and a second signal skips it.

The in-flight request runs in a gated model (tests/support/events.py): it executes until the test
lets it finish, so the signal surely lands while it is in flight."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from core_helpers import http_client, infer_identity, worker_processes

from tests.support.events import Gate, wait_until, write_gated_model
from tests.support.models import write_python_model
from tests.support.server import RunningServer, launch_server

# tritonclient.http's client closes its gevent pool in __del__; when the cyclic GC runs that in
# another thread than the one that made it (these tests send from threads), gevent raises there and
# leaves the socket unclosed. Both are the client library's, reported as unraisable warnings.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


def slow_request_in_background(url: str, results: list[object]) -> threading.Thread:
    def send() -> None:
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(url, network_timeout=60)
        try:
            results.append(infer_identity(client, "slow", 9.0))
        except Exception as exc:  # refused, reset or an error answer: the test looks at it
            results.append(exc)
        finally:
            client.close()  # in this thread: gevent's connection pool belongs to it

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def log_says(server: RunningServer, text: str) -> Callable[[], bool]:
    return lambda: text in server.log


def wait_gone(processes: list[psutil.Process], timeout: float = 10.0) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return alive


def test_sigterm_lets_the_in_flight_request_finish_then_stops_every_worker(tmp_path: Path) -> None:
    repo, gate = tmp_path / "models", Gate(tmp_path / "gate")
    write_gated_model(repo, "slow", gate, dims=[4])
    write_python_model(repo, "identity", "identity", dims=[4], instance_count=2)
    server = launch_server(repo)
    try:
        workers = worker_processes(server)
        assert len(workers) == 3
        results: list[object] = []
        thread = slow_request_in_background(server.http_url, results)
        gate.wait_started(1)  # the request is executing in the slow model now, held
        server.process.send_signal(signal.SIGTERM)
        wait_until(  # not live while exiting (refused or 503), with the request still held
            lambda: server.get("/v2/health/live")[0] != 200, "the server to stop being live"
        )
        gate.open()  # only now may the in-flight request finish
        thread.join(timeout=30)
        assert results == [("1", 9.0)]
        assert server.process.wait(timeout=30) == 0
        assert wait_gone(workers) == []
        assert "server stopped" in server.log
    finally:
        gate.open()  # a failed test may leave the request held: let the server stop at once
        server.close()


def test_exit_timeout_bounds_the_wait_and_a_second_signal_skips_it(tmp_path: Path) -> None:
    for second_signal in (False, True):
        # Each run its own gate, never opened: the request would run forever.
        repo, gate = tmp_path / f"models-{second_signal}", Gate(tmp_path / f"gate-{second_signal}")
        write_gated_model(repo, "slow", gate, dims=[4])
        timeout = "60" if second_signal else "1"
        server = launch_server(repo, f"--exit-timeout-secs={timeout}")
        try:
            workers = worker_processes(server)
            with http_client(server) as client:
                assert client.is_server_ready()
            results: list[object] = []
            slow_request_in_background(server.http_url, results)
            gate.wait_started(1)  # in flight
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            if second_signal:  # the second signal only once the first has started the shutdown
                wait_until(log_says(server, "SIGTERM received"), "the server to take the SIGTERM")
                server.process.send_signal(signal.SIGINT)
            assert server.process.wait(timeout=30) in (0, 1)
            assert time.monotonic() - started < 15, "the 20 s request was waited for"
            assert wait_gone(workers) == []
        finally:
            server.close()
