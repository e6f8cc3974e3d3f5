"""Explicit load/unload over HTTP and gRPC, with config and file overrides, on the real server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.support.server import RunningServer

pytestmark = pytest.mark.integration


def connect(server: RunningServer, protocol: str) -> Any:
    if protocol == "http":
        return httpclient.InferenceServerClient(server.http_url)
    return grpcclient.InferenceServerClient(server.grpc_url)


def identity_answer(client: Any, protocol: str, model: str) -> Any:
    module = httpclient if protocol == "http" else grpcclient
    value = np.arange(8, dtype=np.float32).reshape(2, 4)
    tensor = module.InferInput("INPUT0", [2, 4], "FP32")
    tensor.set_data_from_numpy(value)
    return client.infer(model, [tensor]).as_numpy("OUTPUT0"), value


def instance_count(client: Any, protocol: str, model: str) -> int:
    if protocol == "http":
        return int(client.get_model_config(model)["instance_group"][0]["count"])
    return int(client.get_model_config(model).config.instance_group[0].count)


@pytest.mark.parametrize(("protocol", "model"), [("http", "loadable_py"), ("grpc", "loadable_onnx")])
def test_load_with_config_override_then_unload(server: RunningServer, protocol: str, model: str) -> None:
    client = connect(server, protocol)
    try:
        client.load_model(model)
        assert client.is_model_ready(model)
        assert instance_count(client, protocol, model) == 1
        answer, expected = identity_answer(client, protocol, model)
        np.testing.assert_array_equal(answer, expected)

        # Reload with an override: two instances, as `tritonctl rollout` does it.
        config = connect(server, "http").get_model_config(model)
        config["instance_group"] = [{"count": 2, "kind": "KIND_CPU"}]
        client.load_model(model, config=json.dumps(config))
        assert client.is_model_ready(model)
        assert instance_count(client, protocol, model) == 2
        answer, expected = identity_answer(client, protocol, model)
        np.testing.assert_array_equal(answer, expected)

        client.unload_model(model)
        assert not client.is_model_ready(model)
        with pytest.raises(InferenceServerException) as error:
            identity_answer(client, protocol, model)
        assert "unknown model" in error.value.message() or "not ready" in error.value.message()
    finally:
        client.unload_model(model)
        client.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_load_errors(server: RunningServer, protocol: str) -> None:
    client = connect(server, protocol)
    try:
        with pytest.raises(InferenceServerException) as missing:
            client.load_model("no_such_model")
        assert "no_such_model" in missing.value.message()
        with pytest.raises(InferenceServerException) as bad_config:
            client.load_model("loadable_py", config="{not json")
        assert bad_config.value.status() in ("400", "StatusCode.INVALID_ARGUMENT")
        assert not client.is_model_ready("loadable_py")
        assert client.is_model_ready("py_identity")  # nothing else was disturbed
    finally:
        client.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_load_from_file_override(server: RunningServer, protocol_repo: Path, protocol: str) -> None:
    """A model that exists nowhere on disk, sent as config + `file:1/model.onnx` (base64 over HTTP)."""
    name = f"uploaded_{protocol}"
    http = connect(server, "http")
    config = {
        "name": name,
        "backend": "onnxruntime",
        "max_batch_size": 8,
        "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [4]}],
        "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [4]}],
    }
    files = {"file:1/model.onnx": (protocol_repo / "loadable_onnx" / "1" / "model.onnx").read_bytes()}
    client = connect(server, protocol)
    try:
        client.load_model(name, config=json.dumps(config), files=files)
        answer, expected = identity_answer(client, protocol, name)
        np.testing.assert_array_equal(answer, expected)
        assert http.get_model_config(name)["backend"] == "onnxruntime"
    finally:
        client.unload_model(name)
        client.close()
        http.close()
