"""Ensembles served by the real server, driven by tritonclient: steps in dependency order over a
python preprocess and an ONNX add_sub, batching passed through, errors with Triton's prefix,
statistics of the ensemble's own, composing models loaded (and unloaded) with the ensemble, and
`tritonctl init --template ensemble` serving at once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException
from typer.testing import CliRunner

from tests.support.models import write_onnx_model, write_python_model, write_python_source
from tests.support.server import start_server
from tritonctl.cli.main import app

pytestmark = pytest.mark.integration

# OUTPUT0 = 2 * INPUT0; an error answer for values over 1000. The sleep lets the steps of
# concurrent ensemble requests queue up, so the dynamic batcher has something to batch.
PREPROCESS = """
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        time.sleep(0.05)
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            if (x > 1000).any():
                error = pb_utils.TritonError("too large to preprocess")
                responses.append(pb_utils.InferenceResponse(error=error))
            else:
                doubled = pb_utils.Tensor("OUTPUT0", 2 * x)
                responses.append(pb_utils.InferenceResponse(output_tensors=[doubled]))
        return responses
"""

# SUM = 2*RAW + 2*OTHER, DIFF = 2*RAW - 2*OTHER. The add_sub step is listed first: the order of
# execution comes from the tensors, and the two preprocess steps do not depend on each other.
PIPELINE = """
name: "pipeline"
platform: "ensemble"
max_batch_size: 8
input [
  { name: "RAW", data_type: TYPE_FP32, dims: [ 4 ] },
  { name: "OTHER", data_type: TYPE_FP32, dims: [ 4 ] }
]
output [
  { name: "SUM", data_type: TYPE_FP32, dims: [ 4 ] },
  { name: "DIFF", data_type: TYPE_FP32, dims: [ 4 ] }
]
ensemble_scheduling {
  step [
    {
      model_name: "add_sub"
      model_version: -1
      input_map { key: "INPUT0", value: "raw_scaled" }
      input_map { key: "INPUT1", value: "other_scaled" }
      output_map { key: "OUTPUT0", value: "SUM" }
      output_map { key: "OUTPUT1", value: "DIFF" }
    },
    {
      model_name: "preprocess"
      model_version: -1
      input_map { key: "INPUT0", value: "RAW" }
      output_map { key: "OUTPUT0", value: "raw_scaled" }
    },
    {
      model_name: "preprocess"
      model_version: 1
      input_map { key: "INPUT0", value: "OTHER" }
      output_map { key: "OUTPUT0", value: "other_scaled" }
    }
  ]
}
"""


def build_repository(repo: Path) -> None:
    write_python_source(
        write_python_model(repo, "preprocess", "identity", dims=[4], dynamic_batching=True), PREPROCESS
    )
    write_onnx_model(repo, "add_sub", "add_sub", dims=[4])
    (repo / "pipeline" / "1").mkdir(parents=True)
    (repo / "pipeline" / "config.pbtxt").write_text(PIPELINE)
    result = CliRunner().invoke(
        app, ["init", str(repo), "-t", "ensemble", "-m", "tmpl", "--instance-kind", "cpu"]
    )
    assert result.exit_code == 0, result.output


def pipeline_inputs(raw: np.ndarray, other: np.ndarray) -> list[httpclient.InferInput]:
    inputs = [
        httpclient.InferInput("RAW", list(raw.shape), "FP32"),
        httpclient.InferInput("OTHER", list(other.shape), "FP32"),
    ]
    inputs[0].set_data_from_numpy(raw)
    inputs[1].set_data_from_numpy(other)
    return inputs


def model_stats(client: httpclient.InferenceServerClient, name: str) -> dict[str, object]:
    stats: dict[str, object] = client.get_inference_statistics(name)["model_stats"][0]
    return stats


def test_ensembles_serve_over_their_composing_models(tmp_path: Path) -> None:
    build_repository(tmp_path)
    # Explicit mode, only the ensembles named: their composing models load with them, as on Triton.
    with start_server(
        tmp_path, "--model-control-mode=explicit", "--load-model=pipeline", "--load-model=tmpl"
    ) as server:
        client = httpclient.InferenceServerClient(server.http_url, concurrency=8)
        ready = {(e["name"], e.get("state")) for e in client.get_model_repository_index()}
        for name in ("pipeline", "preprocess", "add_sub", "tmpl", "tmpl_scale", "tmpl_offset"):
            assert (name, "READY") in ready

        raw = np.arange(12, dtype=np.float32).reshape(3, 4)
        other = np.ones((3, 4), np.float32)
        result = client.infer("pipeline", pipeline_inputs(raw, other))
        np.testing.assert_array_equal(result.as_numpy("SUM"), 2 * raw + 2 * other)
        np.testing.assert_array_equal(result.as_numpy("DIFF"), 2 * raw - 2 * other)
        assert result.get_response()["model_name"] == "pipeline"

        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        grpc_inputs = [
            grpcclient.InferInput("RAW", [1, 4], "FP32"),
            grpcclient.InferInput("OTHER", [1, 4], "FP32"),
        ]
        grpc_inputs[0].set_data_from_numpy(raw[:1])
        grpc_inputs[1].set_data_from_numpy(other[:1])
        answer = grpc.infer("pipeline", grpc_inputs, outputs=[grpcclient.InferRequestedOutput("DIFF")])
        assert [o.name for o in answer.get_response().outputs] == ["DIFF"]
        np.testing.assert_array_equal(answer.as_numpy("DIFF"), 2 * raw[:1] - 2 * other[:1])
        metadata = grpc.get_model_metadata("pipeline")
        assert metadata.platform == "ensemble"
        assert [(t.name, list(t.shape)) for t in metadata.inputs] == [("RAW", [-1, 4]), ("OTHER", [-1, 4])]
        grpc.close()

        # The template's ensemble: OUTPUT0 = 2 * INPUT0 + 1.
        x = np.ones((2, 4), np.float32)
        tensor = httpclient.InferInput("INPUT0", [2, 4], "FP32")
        tensor.set_data_from_numpy(x)
        np.testing.assert_array_equal(client.infer("tmpl", [tensor]).as_numpy("OUTPUT0"), 2 * x + 1)

        # A composing model's error comes back with Triton's prefix; the server keeps serving.
        with pytest.raises(InferenceServerException, match="in ensemble 'pipeline', too large to preprocess"):
            client.infer("pipeline", pipeline_inputs(np.full((1, 4), 5000, np.float32), other[:1]))
        with pytest.raises(
            InferenceServerException, match=r"unexpected shape for input 'RAW' for model 'pipeline'"
        ):
            client.infer(
                "pipeline", pipeline_inputs(np.ones((1, 3), np.float32), np.ones((1, 3), np.float32))
            )

        # Batching passes through: concurrent ensemble requests share preprocess executions.
        before = model_stats(client, "preprocess")
        pending = [
            client.async_infer("pipeline", pipeline_inputs(np.full((1, 4), i, np.float32), other[:1]))
            for i in range(8)
        ]
        for i, request in enumerate(pending):
            np.testing.assert_array_equal(request.get_result().as_numpy("SUM"), np.full((1, 4), 2 * i + 2))
        after = model_stats(client, "preprocess")
        assert after["inference_count"] - before["inference_count"] == 16  # type: ignore[operator]
        assert after["execution_count"] - before["execution_count"] < 16  # type: ignore[operator]

        # The ensemble's own statistics: its requests, one execution each, composing compute summed.
        stats = model_stats(client, "pipeline")
        inference = stats["inference_stats"]
        assert isinstance(inference, dict)
        assert inference["success"]["count"] == 10 and inference["fail"]["count"] == 1
        assert stats["inference_count"] == 3 + 1 + 8 and stats["execution_count"] == 10
        assert int(inference["compute_infer"]["ns"]) > 0
        assert model_stats(client, "add_sub")["inference_stats"]["success"]["count"] == 10  # type: ignore[index]

        # unload_dependents takes the composing models along; a plain unload leaves them serving.
        client.unload_model("tmpl", unload_dependents=True)
        client.unload_model("pipeline")
        states = {e["name"]: e.get("state") for e in client.get_model_repository_index()}
        assert [states[n] for n in ("tmpl", "tmpl_scale", "tmpl_offset", "pipeline")] == ["UNAVAILABLE"] * 4
        assert states["preprocess"] == states["add_sub"] == "READY"
        client.close()
