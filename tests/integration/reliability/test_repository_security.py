"""The model repository API never lets the network pick a file path (Triton's CVEs: load-API path
traversal, log/trace files set over the network): strict model names, file overrides only into a
fresh temporary folder, no path fields in config overrides, model control `none` unless asked."""

from __future__ import annotations

import base64
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.support.models import write_python_model
from tests.support.server import RunningServer, start_server

pytestmark = pytest.mark.integration

BAD_NAMES = ["..", ".", "../escape", "a/b", "/etc", "a\\b", "a\x00b", "name\n", " lead", "-dash", "x" * 300]
MODEL_SOURCE = b"class TritonPythonModel:\n    def execute(self, requests):\n        return []\n"


def config_json(name: str, **extra: Any) -> str:
    config = {
        "name": name,
        "backend": "python",
        "max_batch_size": 4,
        "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [4]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [4]}],
    }
    config.update(extra)
    return json.dumps(config)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root: Path = tmp_path_factory.mktemp("security")
    write_python_model(root / "models", "identity", "identity", dims=[4])
    (root / "outside").mkdir()
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[RunningServer]:
    with start_server(repo / "models", "--model-control-mode=explicit", "--load-model=identity") as running:
        yield running


def files_under(*folders: Path) -> set[Path]:
    return {path for folder in folders for path in folder.rglob("*")}


def temp_root() -> Path:
    return Path(tempfile.gettempdir())


def http_load(server: RunningServer, name: str, parameters: dict[str, Any]) -> httpx.Response:
    quoted = httpx.URL(f"http://{server.http_url}/v2/repository/models/").join(
        name.replace("%", "%25").replace("/", "%2F").replace("\\", "%5C").replace("\n", "%0A")
    )
    return httpx.post(str(quoted) + "/load", json={"parameters": parameters}, timeout=60)


def grpc_load(server: RunningServer, name: str, parameters: dict[str, Any]) -> grpc.RpcError | None:
    request = pb.RepositoryModelLoadRequest(model_name=name)
    for key, value in parameters.items():
        if isinstance(value, bytes):
            request.parameters[key].bytes_param = value
        else:
            request.parameters[key].string_param = value
    with grpc.insecure_channel(server.grpc_url) as channel:
        try:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).RepositoryModelLoad(request, timeout=60)
        except grpc.RpcError as exc:
            return exc
    return None


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_model_names_are_refused_over_both_protocols(
    server: RunningServer, repo: Path, name: str
) -> None:
    before = files_under(repo)
    error = grpc_load(server, name, {})
    assert error is not None and error.code() in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
    ), (error.code(), error.details()) if error else None
    assert "invalid model name" in error.details() or "not found" in error.details(), error.details()
    with_override = {"config": config_json(name), "file:1/model.py": MODEL_SOURCE}
    error = grpc_load(server, name, with_override)
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    if "\x00" not in name and "/" not in name and "\\" not in name:
        answer = http_load(server, name, {"config": config_json(name)})
        assert answer.status_code in (400, 404), answer.text
    assert files_under(repo) == before


@pytest.mark.parametrize(
    "path",
    [
        "../evil.py",
        "1/../../evil.py",
        "/tmp/tritonctl-evil.py",
        "1\\..\\..\\evil.py",
        "1/model.py\x00.txt",
        "",
    ],
    ids=repr,
)
def test_file_overrides_cannot_leave_their_fresh_folder(server: RunningServer, repo: Path, path: str) -> None:
    before_tmp = {p.name for p in temp_root().iterdir()}
    before = files_under(repo)
    parameters = {"config": config_json("uploaded"), f"file:{path}": MODEL_SOURCE}
    error = grpc_load(server, "uploaded", parameters)
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT, (
        (
            error.code(),
            error.details(),
        )
        if error
        else "loaded"
    )
    answer = http_load(
        server,
        "uploaded",
        {"config": config_json("uploaded"), f"file:{path}": base64.b64encode(MODEL_SOURCE).decode()},
    )
    assert answer.status_code == 400, answer.text
    assert files_under(repo) == before
    assert not (temp_root() / "tritonctl-evil.py").exists()
    leftovers = {p.name for p in temp_root().iterdir()} - before_tmp
    assert not [name for name in leftovers if name.startswith("tritonctl-override-")], leftovers


@pytest.mark.parametrize(
    "extra",
    [
        {"default_model_filename": "../../identity/1/model.py"},
        {"default_model_filename": "/etc/passwd"},
        {"cc_model_filenames": {"7.0": "../model.py"}},
        {
            "model_warmup": [
                {
                    "name": "w",
                    "batch_size": 1,
                    "inputs": {
                        "INPUT0": {
                            "data_type": "TYPE_FP32",
                            "dims": [4],
                            "input_data_file": "../../../etc/passwd",
                        }
                    },
                }
            ]
        },
    ],
    ids=["filename-traversal", "filename-absolute", "cc-filename", "warmup-file"],
)
def test_config_overrides_cannot_name_files_outside_the_model(
    server: RunningServer, extra: dict[str, Any]
) -> None:
    parameters = {"config": config_json("uploaded", **extra), "file:1/model.py": MODEL_SOURCE}
    error = grpc_load(server, "uploaded", parameters)
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT, (
        (error.code(), error.details()) if error else "loaded"
    )
    index = grpcclient.InferenceServerClient(server.grpc_url).get_model_repository_index().models
    assert not [m for m in index if m.name == "uploaded" and m.state == "READY"]


def test_a_valid_override_loads_from_a_fresh_folder_removed_at_unload(
    server: RunningServer, repo: Path
) -> None:
    before_tmp = {p.name for p in temp_root().iterdir()}
    client = grpcclient.InferenceServerClient(server.grpc_url)
    client.load_model(
        "uploaded_ok", config=config_json("uploaded_ok"), files={"file:1/model.py": MODEL_SOURCE}
    )
    created = [
        name
        for name in {p.name for p in temp_root().iterdir()} - before_tmp
        if name.startswith("tritonctl-override-")
    ]
    assert len(created) == 1 and (temp_root() / created[0] / "uploaded_ok" / "1" / "model.py").is_file()
    assert not (repo / "models" / "uploaded_ok").exists()
    client.unload_model("uploaded_ok")
    assert not (temp_root() / created[0]).exists()


def test_logging_and_trace_settings_cannot_set_files(server: RunningServer, repo: Path) -> None:
    target = repo / "outside" / "server.log"
    base = f"http://{server.http_url}"
    for path, body in (
        ("/v2/logging", {"log_file": str(target)}),
        ("/v2/trace/setting", {"trace_file": str(target)}),
        ("/v2/models/identity/trace/setting", {"trace_file": str(target)}),
    ):
        answer = httpx.post(base + path, json=body, timeout=30)
        assert answer.status_code in (400, 403, 404, 405, 501), (path, answer.status_code)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException):
        client.update_log_settings({"log_file": str(target)})
    with pytest.raises(InferenceServerException):
        client.update_trace_settings(settings={"trace_file": str(target)})
    assert not target.exists()


def test_model_control_stays_none_unless_asked(tmp_path: Path) -> None:
    write_python_model(tmp_path, "identity", "identity", dims=[4])
    with start_server(tmp_path, entry="tritonctl") as server:
        answer = httpx.post(f"http://{server.http_url}/v2/repository/models/identity/unload", timeout=30)
        assert answer.status_code == 503
        assert "not allowed" in answer.json()["error"]
        client = grpcclient.InferenceServerClient(server.grpc_url)
        with pytest.raises(InferenceServerException, match="not allowed"):
            client.load_model(
                "identity", config=config_json("identity"), files={"file:1/model.py": MODEL_SOURCE}
            )
        assert client.is_model_ready("identity")
    assert [p.name for p in tmp_path.iterdir()] == ["identity"]
