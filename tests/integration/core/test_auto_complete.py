"""A python model that declares itself in `auto_complete_config` (its config.pbtxt names only the
model and backend) serves with the completed config, as on Triton: config, metadata, request
checks and the dynamic batcher all follow it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.support.models import write_python_source
from tests.support.server import start_server

pytestmark = pytest.mark.integration

SELF_DESCRIBING = """
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        auto_complete_model_config.set_max_batch_size(4)
        auto_complete_model_config.add_input({"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [3]})
        auto_complete_model_config.add_output({"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [3]})
        auto_complete_model_config.set_dynamic_batching()
        return auto_complete_model_config

    def execute(self, requests):
        time.sleep(0.2)  # long enough for concurrent requests to queue up behind the first one
        responses = []
        for request in requests:
            rows = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            doubled = pb_utils.Tensor("OUTPUT0", 2 * rows)
            responses.append(pb_utils.InferenceResponse(output_tensors=[doubled]))
        return responses
"""


def infer_input(rows: np.ndarray) -> httpclient.InferInput:
    tensor = httpclient.InferInput("INPUT0", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    return tensor


def test_config_completed_by_the_model_is_served(tmp_path: Path) -> None:
    model_dir = tmp_path / "described"
    model_dir.mkdir()
    (model_dir / "config.pbtxt").write_text('name: "described"\nbackend: "python"\n')
    write_python_source(model_dir, SELF_DESCRIBING)
    with start_server(tmp_path) as server:
        client = httpclient.InferenceServerClient(server.http_url, concurrency=8)
        config = client.get_model_config("described")
        assert config["max_batch_size"] == 4
        assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [
            ("INPUT0", "TYPE_FP32", [3])
        ]
        assert [t["name"] for t in config["output"]] == ["OUTPUT0"]
        assert "dynamic_batching" in config

        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        metadata = grpc.get_model_metadata("described")
        assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [("INPUT0", "FP32", [-1, 3])]
        assert grpc.get_model_config("described").config.max_batch_size == 4
        grpc.close()

        rows = np.arange(6, dtype=np.float32).reshape(2, 3)
        np.testing.assert_array_equal(
            client.infer("described", [infer_input(rows)]).as_numpy("OUTPUT0"), 2 * rows
        )
        with pytest.raises(InferenceServerException, match="batch-size must be <= 4"):
            client.infer("described", [infer_input(np.zeros((5, 3), np.float32))])
        with pytest.raises(InferenceServerException, match=r"Expected \[-1,3\], got \[1,4\]"):
            client.infer("described", [infer_input(np.zeros((1, 4), np.float32))])

        # The dynamic batcher the model asked for: 8 one-row requests in fewer executions.
        before = client.get_inference_statistics("described")["model_stats"][0]
        pending = [
            client.async_infer("described", [infer_input(np.full((1, 3), i, np.float32))]) for i in range(8)
        ]
        for i, request in enumerate(pending):
            np.testing.assert_array_equal(request.get_result().as_numpy("OUTPUT0"), np.full((1, 3), 2 * i))
        after = client.get_inference_statistics("described")["model_stats"][0]
        assert after["inference_count"] - before["inference_count"] == 8
        assert after["execution_count"] - before["execution_count"] < 8
        client.close()
