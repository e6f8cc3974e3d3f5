"""`tritonctl init` followed by the real server: every runnable template answers at once, and the
bundled example repository (`make serve`) serves what it promises."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from typer.testing import CliRunner

from tests.support.server import start_server
from tritonctl.cli.main import app
from tritonctl.examples import build_examples

pytestmark = pytest.mark.integration


def _add_sub(client: httpclient.InferenceServerClient, model: str, names: tuple[str, str, str, str]) -> None:
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.ones_like(a)
    inputs = [
        httpclient.InferInput(names[0], a.shape, "FP32"),
        httpclient.InferInput(names[1], b.shape, "FP32"),
    ]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    result = client.infer(model, inputs)
    np.testing.assert_array_equal(result.as_numpy(names[2]), a + b)
    np.testing.assert_array_equal(result.as_numpy(names[3]), a - b)


def test_templates_and_examples_serve_right_away(tmp_path: Path) -> None:
    # One server for both (each start costs seconds on a shared machine).
    build_examples(tmp_path)
    runner = CliRunner()
    for template in ("onnx", "pytorch", "python"):
        args = ["init", str(tmp_path), "-t", template, "-m", f"t_{template}", "--instance-kind", "cpu"]
        assert runner.invoke(app, args).exit_code == 0
    with start_server(tmp_path) as server:
        client = httpclient.InferenceServerClient(server.http_url)
        _add_sub(client, "t_onnx", ("INPUT0", "INPUT1", "OUTPUT0", "OUTPUT1"))
        _add_sub(client, "t_python", ("INPUT0", "INPUT1", "OUTPUT0", "OUTPUT1"))
        _add_sub(client, "t_pytorch", ("INPUT__0", "INPUT__1", "OUTPUT__0", "OUTPUT__1"))
        _add_sub(client, "simple", ("INPUT0", "INPUT1", "OUTPUT0", "OUTPUT1"))
        _add_sub(client, "add_sub_py", ("INPUT0", "INPUT1", "OUTPUT0", "OUTPUT1"))
        x = np.ones((3, 4), dtype=np.float32)
        request = httpclient.InferInput("INPUT0", x.shape, "FP32")
        request.set_data_from_numpy(x)
        probabilities = client.infer("classifier", [request]).as_numpy("PROBABILITIES")
        assert probabilities.shape == (3, 3)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
        assert client.get_model_config("classifier")["max_batch_size"] == 8
