"""Model control modes on the real server: none, explicit (load/unload, overrides), failures.

Poll mode lives in test_poll_mode.py, shutdown in test_shutdown.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tritonclient.http as httpclient
from core_helpers import grpc_client, http_client, index, infer_identity, wait_for, worker_processes
from tritonclient.utils import InferenceServerException

from tests.support.models import INIT_FAILURE_MESSAGE, write_python_model
from tests.support.server import launch_server, start_server

pytestmark = pytest.mark.integration


def identity_config_json(name: str, instance_count: int) -> str:
    return json.dumps(
        {
            "name": name,
            "backend": "python",
            "max_batch_size": 8,
            "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [4]}],
            "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [4]}],
            "instance_group": [{"count": instance_count, "kind": "KIND_CPU"}],
        }
    )


def move_config_to_server_config(repo: Path, model_dir: Path) -> None:
    """Configure a model in the repository's server-level config.pbtxt instead of its folder."""
    config_file = model_dir / "config.pbtxt"
    entry = config_file.read_text()
    config_file.unlink()
    (repo / "config.pbtxt").write_text(
        f"model_config_list: [ {{ config: {{ {entry} }} }} ]\n"
        'backend_config: [ { backend: "python" parameters: { key: "shm-default-size" value: "8388608" } } ]\n'
    )


def test_mode_none_serves_the_good_models_and_lists_the_failing_one(tmp_path: Path) -> None:
    write_python_model(tmp_path, "identity", "identity", dims=[4])
    write_python_model(tmp_path, "broken", "init_fails", dims=[4])
    move_config_to_server_config(tmp_path, write_python_model(tmp_path, "listed", "identity", dims=[4]))
    with start_server(tmp_path, "--exit-on-error=false") as server:
        client = http_client(server)
        assert infer_identity(client, "identity", 3.0) == ("1", 3.0)
        assert infer_identity(client, "listed", 8.0) == ("1", 8.0)  # configured in the server config
        entries = index(client)
        assert entries[("identity", "1")] == ("READY", "")
        state, reason = entries[("broken", "1")]
        assert state == "UNAVAILABLE" and INIT_FAILURE_MESSAGE in reason
        # Triton's strict readiness: a model that should be loaded and is not makes the server unready.
        assert client.is_server_live() and not client.is_server_ready()
        assert client.is_model_ready("identity") and not client.is_model_ready("broken")
        with pytest.raises(InferenceServerException, match="'broken' has no available versions"):
            infer_identity(client, "broken")
        # ... and the server keeps serving after it.
        assert infer_identity(client, "identity", 4.0) == ("1", 4.0)
        # Outside explicit mode the load/unload API answers as Triton does.
        with pytest.raises(
            InferenceServerException, match="explicit model load / unload is not allowed"
        ) as info:
            client.unload_model("identity")
        assert info.value.status() == "503"
        assert client.is_model_ready("identity")


def test_exit_on_error_true_stops_the_server_when_a_model_fails(tmp_path: Path) -> None:
    write_python_model(tmp_path, "identity", "identity", dims=[4])
    write_python_model(tmp_path, "broken", "init_fails", dims=[4])
    with pytest.raises(RuntimeError, match="server exited with code 1") as info:
        launch_server(tmp_path, timeout=60)  # Triton's default: --exit-on-error=true
    assert "failed to load all models" in str(info.value)


def test_explicit_mode_load_unload_and_config_override(tmp_path: Path) -> None:
    write_python_model(tmp_path, "identity", "identity", dims=[4])
    write_python_model(tmp_path, "other", "identity", dims=[4])
    with start_server(tmp_path, "--model-control-mode=explicit", "--load-model=identity") as server:
        client, grpc = http_client(server), grpc_client(server)
        assert client.is_server_ready()
        assert index(client)[("other", "")] == ("", "")  # in the repository, never loaded
        with pytest.raises(InferenceServerException, match="Request for unknown model: 'other' is not found"):
            infer_identity(client, "other")

        grpc.load_model("other")  # gRPC load ...
        assert infer_identity(client, "other", 2.0) == ("1", 2.0)
        client.unload_model("other")  # ... HTTP unload
        assert index(client)[("other", "1")] == ("UNAVAILABLE", "unloaded")
        assert client.is_server_ready()  # unloaded on purpose does not count against readiness
        assert not client.is_model_ready("other")

        # Reload with a config override: two instances instead of one, over both protocols.
        assert len(worker_processes(server)) == 1
        client.load_model("identity", config=identity_config_json("identity", 2))
        assert client.get_model_config("identity")["instance_group"][0]["count"] == 2
        # The replaced version drains and stops in the background after the swap.
        wait_for(lambda: len(worker_processes(server)) == 2, what="2 instance processes")
        grpc.load_model("identity", config=identity_config_json("identity", 3))
        assert grpc.get_model_config("identity").config.instance_group[0].count == 3
        wait_for(lambda: len(worker_processes(server)) == 3, what="3 instance processes")
        assert infer_identity(client, "identity", 5.0) == ("1", 5.0)

        with pytest.raises(InferenceServerException, match="failed to poll from model repository"):
            client.load_model("ghost")
        with pytest.raises(InferenceServerException, match="directory name must equal model name"):
            client.load_model("identity", config=identity_config_json("elsewhere", 1))
        assert infer_identity(client, "identity", 6.0) == ("1", 6.0)  # the failed reload changed nothing


def test_explicit_mode_star_loads_everything_and_unload_of_unknown_is_accepted(tmp_path: Path) -> None:
    write_python_model(tmp_path, "a", "identity", dims=[4])
    write_python_model(tmp_path, "b", "identity", dims=[4])
    with start_server(tmp_path, "--model-control-mode=explicit", "--load-model=*") as server:
        client = http_client(server)
        assert client.is_model_ready("a") and client.is_model_ready("b")
        client.unload_model("never_heard_of")  # Triton answers success


def test_load_with_file_override_serves_a_model_the_repository_does_not_have(tmp_path: Path) -> None:
    write_python_model(tmp_path, "identity", "identity", dims=[4])
    source = write_python_model(tmp_path / "elsewhere", "fresh", "identity", dims=[4])
    model_py = (source / "1" / "model.py").read_bytes()
    with start_server(tmp_path, "--model-control-mode=explicit") as server:
        client = http_client(server)
        client.load_model(
            "fresh", config=identity_config_json("fresh", 1), files={"file:1/model.py": model_py}
        )
        assert infer_identity(client, "fresh", 7.0) == ("1", 7.0)
        assert index(client)[("fresh", "1")] == ("READY", "")
        with pytest.raises(InferenceServerException, match="must be a relative path inside the model folder"):
            client.load_model(
                "sneaky", config=identity_config_json("sneaky", 1), files={"file:../../etc/x.py": model_py}
            )
        client.unload_model("fresh")
        assert index(client)[("fresh", "1")] == ("UNAVAILABLE", "unloaded")


def test_tritonctl_serve_cli_serves_with_triton_spellings(tmp_path: Path) -> None:
    write_python_model(tmp_path, "identity", "identity", dims=[4])
    # The same harness, but through `tritonctl serve` instead of `python -m server`.
    with start_server(
        tmp_path, "--log-verbose=1", "--backend-config=python,shm-default-size=4194304", entry="tritonctl"
    ) as server:
        client = httpclient.InferenceServerClient(server.http_url)
        assert infer_identity(client, "identity", 1.5) == ("1", 1.5)
