"""Poll mode on the real server: new versions, edits, broken edits and new/removed models are picked
up while traffic keeps flowing, and the old version serves until its replacement is ready."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from core_helpers import http_client, index, infer_identity, wait_for, worker_processes
from tritonclient.utils import InferenceServerException

from tests.support.models import write_python_model
from tests.support.server import start_server

# Threads send with tritonclient.http, whose client closes its gevent pool in __del__: run by the
# cyclic GC in another thread, gevent raises there (an unraisable warning from the client library,
# see tests/integration/core/test_shutdown.py).
pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


class Traffic(threading.Thread):
    """Sends identity requests in a loop and records every answer and every error."""

    def __init__(self, url: str, model: str) -> None:
        super().__init__(daemon=True)
        self.url, self.model = url, model
        self.versions: list[str] = []
        self.errors: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(self.url)
        while not self.halt.is_set():
            try:
                version, value = infer_identity(client, self.model, 2.0)
                assert value == 2.0
                self.versions.append(version)
            except (InferenceServerException, AssertionError) as exc:
                self.errors.append(str(exc))


def add_version(model_dir: Path, source: int, target: int) -> None:
    """Copy a version folder, then rename it into place (a poll never sees it half-written)."""
    staging = model_dir / f".staging-{target}"
    shutil.copytree(model_dir / str(source), staging)
    staging.rename(model_dir / str(target))


def test_poll_mode_follows_the_repository_without_dropping_requests(tmp_path: Path) -> None:
    model_dir = write_python_model(tmp_path, "m", "identity", dims=[4])
    config_text = (model_dir / "config.pbtxt").read_text()
    with start_server(tmp_path, "--model-control-mode=poll", "--repository-poll-secs=0.3") as server:
        client = http_client(server)
        traffic = Traffic(server.http_url, "m")
        traffic.start()
        try:
            # A new version folder: version 2 takes over, version 1 is unloaded (latest policy).
            add_version(model_dir, 1, 2)
            wait_for(lambda: index(client).get(("m", "1")) == ("UNAVAILABLE", "unloaded"), what="v1 unloaded")
            assert index(client)[("m", "2")] == ("READY", "")
            assert infer_identity(client, "m") == ("2", 1.0)

            # A broken edit: the running version keeps serving and the index says why.
            (model_dir / "config.pbtxt").write_text(config_text + "\nthis is not a config\n")
            wait_for(lambda: index(client)[("m", "2")][1] != "", what="the broken edit reported")
            state, reason = index(client)[("m", "2")]
            assert state == "READY" and "reload failed" in reason
            assert infer_identity(client, "m") == ("2", 1.0)

            # A good edit: two instances; the new ones take over atomically, the old one drains.
            (model_dir / "config.pbtxt").write_text(config_text.replace("count: 1", "count: 2"))
            wait_for(lambda: index(client)[("m", "2")] == ("READY", ""), what="the fixed config loaded")
            wait_for(lambda: len(worker_processes(server)) == 2, what="2 instance processes")
            assert client.get_model_config("m")["instance_group"][0]["count"] == 2
        finally:
            traffic.halt.set()
            traffic.join(timeout=10)
        assert traffic.errors == []
        assert traffic.versions.count("1") > 0 and traffic.versions.count("2") > 0

        # A new model folder is loaded; a removed one is unloaded and leaves the index.
        write_python_model(tmp_path, "late", "identity", dims=[4])
        wait_for(lambda: client.is_model_ready("late"), what="the new model")
        shutil.rmtree(tmp_path / "late")
        wait_for(lambda: all(name != "late" for name, _ in index(client)), what="the removed model gone")
        assert not client.is_model_ready("late")
        assert client.is_server_ready()
