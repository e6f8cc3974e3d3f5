"""`tritonctl config generate|show`: configs generated from model files validate against them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from server.repository import load_model_config
from tests.support.models import write_onnx_model, write_torchscript_model
from tritonctl.cli.main import app
from tritonctl.repository.tiny_models import build_onnx_add_sub

runner = CliRunner()


def _validate_strict(repo: Path) -> None:
    result = runner.invoke(app, ["validate", str(repo), "--check-models", "--strict"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(("kind", "opts"), [("add_sub", {}), ("mlp", {"hidden": [8]}), ("identity", {})])
def test_generate_from_onnx_validates(tmp_path: Path, kind: str, opts: dict[str, object]) -> None:
    model_dir = write_onnx_model(tmp_path, "m", kind, **opts)
    (model_dir / "config.pbtxt").unlink()
    result = runner.invoke(app, ["config", "generate", str(model_dir)])
    assert result.exit_code == 0, result.output
    _validate_strict(tmp_path)


def test_generate_onnx_batch_size_options(tmp_path: Path) -> None:
    build_onnx_add_sub(tmp_path / "m" / "1" / "model.onnx")
    printed = runner.invoke(
        app, ["config", "generate", str(tmp_path / "m"), "--print", "--max-batch-size", "32"]
    )
    assert printed.exit_code == 0
    assert "max_batch_size: 32" in printed.stdout and not (tmp_path / "m" / "config.pbtxt").exists()
    assert (
        runner.invoke(app, ["config", "generate", str(tmp_path / "m"), "--max-batch-size", "0"]).exit_code
        == 0
    )
    config = load_model_config(tmp_path / "m", autocomplete=False)
    assert config.max_batch_size == 0 and list(config.input[0].dims) == [-1, 4]
    _validate_strict(tmp_path)


def test_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    build_onnx_add_sub(tmp_path / "m" / "1" / "model.onnx")
    (tmp_path / "m" / "config.pbtxt").write_text("# mine\n")
    result = runner.invoke(app, ["config", "generate", str(tmp_path / "m")])
    assert result.exit_code == 1 and (tmp_path / "m" / "config.pbtxt").read_text() == "# mine\n"
    assert runner.invoke(app, ["config", "generate", str(tmp_path / "m"), "--force"]).exit_code == 0
    _validate_strict(tmp_path)


def test_generate_from_torchscript_validates(tmp_path: Path) -> None:
    model_dir = write_torchscript_model(tmp_path, "t")
    (model_dir / "config.pbtxt").unlink()
    missing = runner.invoke(app, ["config", "generate", str(model_dir)])
    assert missing.exit_code == 1 and "--input" in missing.output
    args = [
        "config",
        "generate",
        str(model_dir),
        "--input",
        "INPUT__0:FP32:-1",
        "--input",
        "INPUT__1:fp32:-1",
    ]
    assert runner.invoke(app, args).exit_code == 0
    config = load_model_config(model_dir, autocomplete=False)
    assert config.max_batch_size == 4
    assert [(t.name, list(t.dims)) for t in config.output] == [("OUTPUT__0", [-1]), ("OUTPUT__1", [-1])]
    _validate_strict(tmp_path)


@pytest.mark.parametrize("spec", ["INPUT0", "INPUT0:FP33:4", "INPUT0:FP32:", "INPUT0:FP32:a"])
def test_bad_tensor_specs(tmp_path: Path, spec: str) -> None:
    build_onnx_add_sub(tmp_path / "m" / "1" / "model.onnx")
    result = runner.invoke(app, ["config", "generate", str(tmp_path / "m"), "--input", spec])
    assert result.exit_code == 1
    assert "NAME:DTYPE:DIMS" in result.output or "data type" in result.output


PY_AUTOCOMPLETE = """import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        auto_complete_model_config.add_input({"name": "IN", "data_type": "TYPE_FP32", "dims": [2]})
        auto_complete_model_config.add_output({"name": "OUT", "data_type": "TYPE_FP32", "dims": [2]})
        auto_complete_model_config.set_max_batch_size(4)
        auto_complete_model_config.set_dynamic_batching()
        return auto_complete_model_config

    def execute(self, requests):
        return []
"""


def test_generate_python_runs_model_only_when_allowed(tmp_path: Path) -> None:
    (tmp_path / "p" / "1").mkdir(parents=True)
    (tmp_path / "p" / "1" / "model.py").write_text(PY_AUTOCOMPLETE)
    refused = runner.invoke(app, ["config", "generate", str(tmp_path / "p")])
    assert refused.exit_code == 1 and "--allow-python" in refused.output
    allowed = runner.invoke(app, ["config", "generate", str(tmp_path / "p"), "--allow-python"])
    assert allowed.exit_code == 0, allowed.output
    config = load_model_config(tmp_path / "p", autocomplete=False)
    assert (config.backend, config.max_batch_size, config.input[0].name) == ("python", 4, "IN")
    _validate_strict(tmp_path)


def test_show_prints_the_effective_config(tmp_path: Path) -> None:
    build_onnx_add_sub(tmp_path / "auto" / "1" / "model.onnx")  # no config.pbtxt: auto-complete only
    result = runner.invoke(app, ["config", "show", str(tmp_path / "auto"), "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["max_batch_size"] == 4 and data["input"][0]["dims"] == [4]
    assert data["instance_group"][0]["count"] == 1
    text = runner.invoke(app, ["config", "show", str(tmp_path / "auto")])
    assert 'platform: "onnxruntime_onnx"' in text.stdout


def test_show_uses_the_repository_server_config(tmp_path: Path) -> None:
    (tmp_path / "config.pbtxt").write_text(
        'model_config_list [ { config { name: "srv" backend: "python" max_batch_size: 2 } } ]'
    )
    (tmp_path / "srv" / "1").mkdir(parents=True)
    (tmp_path / "srv" / "1" / "model.py").write_text(
        "class TritonPythonModel:\n    def execute(self, r): ...\n"
    )
    result = runner.invoke(app, ["config", "show", str(tmp_path / "srv"), "-f", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["max_batch_size"] == 2
    broken = runner.invoke(app, ["config", "show", str(tmp_path / "missing_dir")])
    assert broken.exit_code == 2
