"""`tritonctl init`: every template validates, tiny models really run, options land in the config."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from server.repository import load_model_config
from tritonctl.cli.main import app

runner = CliRunner()


def _init(repo: Path, template: str, name: str, *extra: str) -> None:
    result = runner.invoke(app, ["init", str(repo), "--template", template, "--model", name, *extra])
    assert result.exit_code == 0, result.output


def _validate(repo: Path) -> int:
    result = runner.invoke(app, ["validate", str(repo), "--check-models", "--strict"])
    return result.exit_code


@pytest.mark.parametrize("template", ["onnx", "pytorch", "python", "ensemble"])
def test_template_validates_strictly(tmp_path: Path, template: str) -> None:
    _init(tmp_path, template, "demo")
    assert _validate(tmp_path) == 0


def test_tensorrt_template_needs_its_engine(tmp_path: Path) -> None:
    _init(tmp_path, "tensorrt", "engine")
    assert (tmp_path / "engine" / "README.md").is_file()
    result = runner.invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 1 and "E211-missing-model-file" in result.output
    plan = tmp_path / "built.plan"
    plan.write_bytes(b"\x00serialized engine bytes")
    _init(tmp_path, "tensorrt", "engine", "--from", str(plan), "--force")
    assert (tmp_path / "engine" / "1" / "model.plan").read_bytes() == plan.read_bytes()
    assert _validate(tmp_path) == 0


def test_all_templates_in_one_repository(tmp_path: Path) -> None:
    for template in ("onnx", "pytorch", "python", "ensemble"):
        _init(tmp_path, template, f"m_{template}", "--max-batch-size", "0")
    assert _validate(tmp_path) == 0


def test_onnx_template_model_runs(tmp_path: Path) -> None:
    import onnxruntime

    _init(tmp_path, "onnx", "simple")
    session = onnxruntime.InferenceSession(str(tmp_path / "simple" / "1" / "model.onnx"))
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    total, difference = session.run(None, {"INPUT0": a, "INPUT1": np.ones_like(a)})
    np.testing.assert_array_equal(total, a + 1)
    np.testing.assert_array_equal(difference, a - 1)


def test_pytorch_template_model_runs(tmp_path: Path) -> None:
    import torch

    _init(tmp_path, "pytorch", "torchy")
    module = torch.jit.load(str(tmp_path / "torchy" / "1" / "model.pt"))
    total, difference = module(torch.ones(2, 4), torch.ones(2, 4))
    assert torch.equal(total, torch.full((2, 4), 2.0)) and torch.equal(difference, torch.zeros(2, 4))


def test_python_template_model_runs_with_the_server_utils(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.backends.python import triton_python_backend_utils as pb_utils
    from server.repository import config_to_json

    _init(tmp_path, "python", "pyadd")
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb_utils)
    spec = importlib.util.spec_from_file_location("pyadd_model", tmp_path / "pyadd" / "1" / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    import json

    model.initialize({"model_config": json.dumps(config_to_json(load_model_config(tmp_path / "pyadd")))})
    a = np.array([[1, 2, 3, 4]], dtype=np.float32)
    request = pb_utils.InferenceRequest(
        inputs=[pb_utils.Tensor("INPUT0", a), pb_utils.Tensor("INPUT1", a)], requested_output_names=[]
    )
    (response,) = model.execute([request])
    outputs = {t.name(): t.as_numpy() for t in response.output_tensors()}
    np.testing.assert_array_equal(outputs["OUTPUT0"], a * 2)
    np.testing.assert_array_equal(outputs["OUTPUT1"], np.zeros_like(a))


def test_options_land_in_the_config(tmp_path: Path) -> None:
    _init(
        tmp_path,
        "python",
        "m",
        "--max-batch-size",
        "16",
        "--instance-count",
        "3",
        "--instance-kind",
        "gpu",
        "--gpus",
        "0,1",
        "--max-queue-delay-us",
        "500",
    )
    config = load_model_config(tmp_path / "m", autocomplete=False)
    assert config.max_batch_size == 16
    group = config.instance_group[0]
    assert (group.count, group.kind, list(group.gpus)) == (3, group.KIND_GPU, [0, 1])
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    _init(tmp_path, "python", "plain", "--no-dynamic-batching")
    assert not load_model_config(tmp_path / "plain", autocomplete=False).HasField("dynamic_batching")


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    _init(tmp_path, "python", "m")
    again = runner.invoke(app, ["init", str(tmp_path), "-t", "onnx", "-m", "m"])
    assert again.exit_code == 1 and "--force" in again.output
    assert not (tmp_path / "m" / "1" / "model.onnx").exists()
    _init(tmp_path, "onnx", "m", "--force")
    assert (tmp_path / "m" / "1" / "model.onnx").exists()


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["-t", "python", "-m", "../escape"], 1),
        (["-t", "python", "-m", "ok", "--gpus", "0"], 1),
        (["-t", "python", "-m", "ok", "--gpus", "a,b", "--instance-kind", "gpu"], 2),
        (["-t", "keras", "-m", "ok"], 2),
        (["-t", "ensemble", "-m", "ok", "--from", __file__], 1),
    ],
)
def test_bad_requests(tmp_path: Path, args: list[str], code: int) -> None:
    result = runner.invoke(app, ["init", str(tmp_path), *args])
    assert result.exit_code == code, result.output
    assert not (tmp_path / "ok").exists()


def test_from_onnx_file_generates_the_config(tmp_path: Path) -> None:
    from tritonctl.repository.tiny_models import build_onnx_classifier

    source = build_onnx_classifier(tmp_path / "exported.onnx")
    repo = tmp_path / "repo"
    _init(repo, "onnx", "clf", "--from", str(source), "--instance-kind", "cpu")
    config = load_model_config(repo / "clf", autocomplete=False)
    assert config.max_batch_size == 4
    assert [(t.name, list(t.dims)) for t in config.output] == [("LOGITS", [3]), ("PROBABILITIES", [3])]
    assert _validate(repo) == 0


def test_from_torchscript_needs_inputs_and_cleans_up(tmp_path: Path) -> None:
    from tritonctl.repository.tiny_models import build_torchscript_add_sub

    source = build_torchscript_add_sub(tmp_path / "exported.pt")
    repo = tmp_path / "repo"
    failed = runner.invoke(app, ["init", str(repo), "-t", "pytorch", "-m", "t", "--from", str(source)])
    assert failed.exit_code == 1 and "--input" in failed.output
    assert not (repo / "t").exists()
    _init(
        repo,
        "pytorch",
        "t",
        "--from",
        str(source),
        "--input",
        "INPUT__0:FP32:4",
        "--input",
        "INPUT__1:FP32:4",
    )
    assert _validate(repo) == 0


def test_from_python_file_with_explicit_tensors_or_auto_complete(tmp_path: Path) -> None:
    source = tmp_path / "user_model.py"
    source.write_text(
        "class TritonPythonModel:\n"
        "    @staticmethod\n"
        "    def auto_complete_config(config):\n"
        '        config.add_input({"name": "IN", "data_type": "TYPE_FP32", "dims": [2]})\n'
        '        config.add_output({"name": "OUT", "data_type": "TYPE_FP32", "dims": [2]})\n'
        "        return config\n\n"
        "    def execute(self, requests):\n"
        "        return []\n"
    )
    repo = tmp_path / "repo"
    refused = runner.invoke(app, ["init", str(repo), "-t", "python", "-m", "p", "--from", str(source)])
    assert refused.exit_code == 1 and "--allow-python" in refused.output
    _init(repo, "python", "p", "--from", str(source), "--allow-python")
    assert [t.name for t in load_model_config(repo / "p", autocomplete=False).input] == ["IN"]
    _init(repo, "python", "q", "--from", str(source), "--input", "A:FP32:2", "--output", "B:FP32:2")
    assert [t.name for t in load_model_config(repo / "q", autocomplete=False).output] == ["B"]
    assert _validate(repo) == 0


@pytest.mark.parametrize("template", ["onnx", "pytorch", "python", "ensemble", "tensorrt"])
def test_written_text_files_end_with_one_newline(tmp_path: Path, template: str) -> None:
    _init(tmp_path, template, "demo", "--max-batch-size", "0")
    _init(tmp_path, template, "batched", "--force")
    texts = [p for p in tmp_path.rglob("*") if p.suffix in (".pbtxt", ".py", ".md")]
    assert texts
    for path in texts:
        text = path.read_text(encoding="utf-8")
        assert text.endswith("\n") and not text.endswith("\n\n"), path


@pytest.mark.parametrize("batch", [None, "16"])
def test_the_regenerate_hint_works_from_any_folder_and_keeps_the_batch_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: str | None
) -> None:
    import shlex

    repo = tmp_path / "my repo"  # a space: the hint must quote the path
    _init(repo, "onnx", "simple", *(["--max-batch-size", batch] if batch else []))
    written = load_model_config(repo / "simple", autocomplete=False).max_batch_size
    assert written == int(batch or 8)
    comment = (repo / "simple" / "config.pbtxt").read_text(encoding="utf-8").split("\nname:")[0]
    (hint,) = [line.lstrip("# ").strip() for line in comment.splitlines() if "config generate" in line]
    command = shlex.split(hint)
    assert command[:3] == ["tritonctl", "config", "generate"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = runner.invoke(app, command[1:])
    assert result.exit_code == 0, result.output
    regenerated = (repo / "simple" / "config.pbtxt").read_text(encoding="utf-8")
    assert "generated by `tritonctl config generate`" in regenerated and regenerated.endswith("\n")
    assert load_model_config(repo / "simple", autocomplete=False).max_batch_size == written
    assert _validate(repo) == 0
