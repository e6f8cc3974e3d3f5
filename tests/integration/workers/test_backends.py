"""ONNX and TorchScript models through real workers: batching, per-request rows, types, naming."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from server.errors import LoadError
from tests.integration.workers.pool import Workers, output, request, request_from, tensor
from tests.support.models import write_onnx_model, write_torchscript_model

pytestmark = pytest.mark.integration


def test_onnx_add_sub_batch_splits_rows_back_per_request(workers: Workers) -> None:
    channel = workers.start(write_onnx_model(workers.root, "onnx_add_sub", "add_sub", dims=[4]))
    rng = np.random.default_rng(1)
    pairs = [
        (rng.standard_normal((rows, 4)).astype(np.float32), rng.standard_normal((rows, 4)).astype(np.float32))
        for rows in (1, 3, 2)
    ]
    outcome = workers.run(channel.submit([request("m", INPUT0=a, INPUT1=b) for a, b in pairs]))
    for (a, b), result in zip(pairs, outcome.results, strict=True):
        np.testing.assert_allclose(output(result, "OUTPUT0"), a + b, rtol=1e-6)
        np.testing.assert_allclose(output(result, "OUTPUT1"), a - b, rtol=1e-6)


def test_onnx_requests_with_different_shapes_run_one_by_one(workers: Workers) -> None:
    channel = workers.start(write_onnx_model(workers.root, "onnx_identity", "identity", dims=[-1]))
    arrays = [np.arange(n, dtype=np.float32).reshape(1, n) for n in (2, 5, 3)]
    outcome = workers.run(channel.submit([request("m", INPUT0=a) for a in arrays]))
    for array, result in zip(arrays, outcome.results, strict=True):
        np.testing.assert_array_equal(output(result, "OUTPUT0"), array)


def test_onnx_mlp_matches_onnxruntime_in_process(workers: Workers) -> None:
    import onnxruntime as ort

    model_dir = write_onnx_model(
        workers.root, "onnx_mlp", "mlp", max_batch_size=16, hidden=[64], in_features=32
    )
    channel = workers.start(model_dir)
    batch = np.random.default_rng(2).standard_normal((5, 32)).astype(np.float32)
    outcome = workers.run(channel.submit([request("m", INPUT0=batch[:2]), request("m", INPUT0=batch[2:])]))
    expected = ort.InferenceSession(str(model_dir / "1" / "model.onnx")).run(None, {"INPUT0": batch})[0]
    got = np.concatenate([output(r, "OUTPUT0") for r in outcome.results])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_onnx_fp16_and_requested_outputs(workers: Workers) -> None:
    channel = workers.start(
        write_onnx_model(workers.root, "onnx_fp16", "add_sub", dtype="TYPE_FP16", dims=[3])
    )
    a, b = np.full((2, 3), 1.5, np.float16), np.full((2, 3), 0.25, np.float16)
    outcome = workers.run(
        channel.submit(
            [request("m", outputs=["OUTPUT1"], INPUT0=a, INPUT1=b), request("m", INPUT0=a, INPUT1=b)]
        )
    )
    first = outcome.results[0]
    assert [o.name for o in first.outputs] == ["OUTPUT1"]  # type: ignore[union-attr]
    assert first.outputs[0].datatype == "FP16"  # type: ignore[union-attr]
    np.testing.assert_array_equal(output(first, "OUTPUT1"), a - b)
    np.testing.assert_array_equal(output(outcome.results[1], "OUTPUT0"), a + b)


def test_onnx_config_naming_a_missing_input_fails_to_load(workers: Workers) -> None:
    model_dir = write_onnx_model(workers.root, "onnx_wrong", "identity")
    config_file = model_dir / "config.pbtxt"
    config_file.write_text(config_file.read_text().replace('"INPUT0"', '"IMAGE"'))
    with pytest.raises(
        LoadError, match=r"config.pbtxt names input 'IMAGE', but the ONNX model's inputs are \['INPUT0'\]"
    ):
        workers.start(model_dir)


@pytest.fixture(scope="module")
def torch_module() -> Any:
    return pytest.importorskip("torch")


def test_torchscript_index_naming_batches_rows(workers: Workers, torch_module: Any) -> None:
    channel = workers.start(write_torchscript_model(workers.root, "ts_index", naming="index", dims=[2]))
    a, b = np.array([[1, 2], [3, 4]], np.float32), np.array([[10, 20], [30, 40]], np.float32)
    requests = [request("m", INPUT__0=a[:1], INPUT__1=b[:1]), request("m", INPUT__0=a[1:], INPUT__1=b[1:])]
    outcome = workers.run(channel.submit(requests))
    np.testing.assert_array_equal(np.concatenate([output(r, "OUTPUT__0") for r in outcome.results]), a + b)
    np.testing.assert_array_equal(np.concatenate([output(r, "OUTPUT__1") for r in outcome.results]), a - b)


def test_torchscript_argument_naming_and_bf16(workers: Workers, torch_module: Any) -> None:
    """Inputs named after forward(x, y); BF16 travels as raw 2-byte words both ways."""
    torch = torch_module
    model_dir = write_torchscript_model(
        workers.root, "ts_args_bf16", naming="args", dtype="TYPE_BF16", dims=[3]
    )
    channel = workers.start(model_dir)
    a = torch.tensor([[1.5, 2.0, -3.0]], dtype=torch.bfloat16)
    b = torch.tensor([[0.5, 0.25, 1.0]], dtype=torch.bfloat16)

    def words(t: Any) -> np.ndarray[Any, Any]:
        result: np.ndarray[Any, Any] = t.view(torch.int16).numpy().view(np.uint16)
        return result

    inputs = {"x": tensor("x", words(a), "BF16"), "y": tensor("y", words(b), "BF16")}
    result = workers.run(channel.submit([request_from("m", inputs)])).results[0]
    assert {o.datatype for o in result.outputs} == {"BF16"}  # type: ignore[union-attr]
    for name, expected in (("OUTPUT__0", a + b), ("OUTPUT__1", a - b)):
        got = torch.from_numpy(output(result, name).view(np.int16).copy()).view(torch.bfloat16)
        assert got.tolist() == expected.tolist()
