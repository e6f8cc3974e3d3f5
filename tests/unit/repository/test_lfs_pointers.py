"""Git LFS pointers and placeholders in place of model files (CI checkouts without `git lfs pull`).

--no-check-models never opens a model file; --check-models, and the server when it loads, say that
the file is a git-lfs pointer and to run `git lfs pull`.
"""

from __future__ import annotations

import builtins
import io
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from server.errors import ConfigError
from server.repository import check_model_config
from server.repository.loader import load_model_config
from server.repository.validate import validate_repository
from tritonctl.cli.main import app

POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    "size 123\n"
)
TENSORS = """max_batch_size: 8
input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ 4 ] } ]
output [ { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ 4 ] } ]
"""
# model name -> (config head, model file)
MODELS = {
    "onnx_m": ('platform: "onnxruntime_onnx"\n', "model.onnx"),
    "torch_m": ('platform: "pytorch_libtorch"\n', "model.pt"),
    "plan_m": ('platform: "tensorrt_plan"\n', "model.plan"),
    "python_m": ('backend: "python"\n', "model.py"),
}
MODEL_FILES = {filename for _, filename in MODELS.values()}


def _repo(root: Path, contents: dict[str, str]) -> Path:
    for name, (head, filename) in MODELS.items():
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(head + TENSORS)
        (root / name / "1" / filename).write_text(contents.get(name, POINTER))
    return root


def forbid_opening_model_files(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on every way Python code opens a file fails (and is recorded) for a model file."""
    opened: list[str] = []

    def guard(real: Any) -> Any:
        def opener(file: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(file, str | bytes | os.PathLike) and Path(os.fsdecode(file)).name in MODEL_FILES:
                opened.append(os.fsdecode(file))
                raise AssertionError(f"a model file was opened: {os.fsdecode(file)}")
            return real(file, *args, **kwargs)

        return opener

    monkeypatch.setattr(builtins, "open", guard(builtins.open))
    monkeypatch.setattr(io, "open", guard(io.open))
    monkeypatch.setattr(os, "open", guard(os.open))
    # Path.open/read_bytes/read_text go through io.open; torch and onnx loaders are caught too.
    return opened


@pytest.mark.parametrize("content", [POINTER, "placeholder\n"], ids=["lfs-pointer", "placeholder"])
def test_no_check_models_checks_names_only_and_opens_no_model_file(
    tmp_path: Path, content: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = _repo(tmp_path, dict.fromkeys(MODELS, content))
    opened = forbid_opening_model_files(monkeypatch)
    report = validate_repository(repo, check_models=False)
    assert report.diagnostics == []
    result = CliRunner().invoke(app, ["validate", str(repo), "--no-check-models", "--strict"])
    assert result.exit_code == 0, result.output
    assert opened == []


def test_no_check_models_still_checks_names(tmp_path: Path) -> None:
    repo = _repo(tmp_path, {})
    (repo / "onnx_m" / "1" / "model.onnx").rename(repo / "onnx_m" / "1" / "model.pt")
    codes = [d.code for d in validate_repository(repo, check_models=False).diagnostics]
    assert codes == ["E214-platform-contradicts-file"]


def test_check_models_names_the_lfs_pointer_for_every_model_file(tmp_path: Path) -> None:
    repo = _repo(tmp_path, {})
    report = validate_repository(repo, check_models=True)
    assert sorted((d.code, Path(d.file or "").name) for d in report.diagnostics) == sorted(
        ("E215-git-lfs-pointer", filename) for _, filename in MODELS.values()
    )
    for diagnostic in report.diagnostics:
        assert "git-lfs pointer" in diagnostic.message and "git lfs pull" in diagnostic.message
    result = CliRunner().invoke(app, ["validate", str(repo), "--check-models"])
    assert result.exit_code == 1 and "git lfs pull" in result.output


def test_a_pointer_larger_than_the_spec_allows_is_judged_as_a_file(tmp_path: Path) -> None:
    repo = _repo(tmp_path, {"torch_m": POINTER + "x" * 2048})
    codes = {d.code for d in validate_repository(repo).diagnostics if "torch_m" in (d.file or "")}
    assert codes == {"E214-platform-contradicts-file"}  # not a zip archive; no pointer claim


def test_the_server_refuses_a_pointer_with_the_same_words(tmp_path: Path) -> None:
    # The registry loads with load_model_config (auto-complete) then check_model_config.
    repo = _repo(tmp_path, {})
    for name in MODELS:
        errors = [d for d in check_model_config(load_model_config(repo / name), repo / name) if d.is_error]
        assert [d.code for d in errors] == ["E215-git-lfs-pointer"], name
    # An ONNX model without tensors in its config is auto-completed from the file: same finding.
    (repo / "onnx_m" / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\n')
    with pytest.raises(ConfigError, match=r"git-lfs pointer.*git lfs pull") as caught:
        load_model_config(repo / "onnx_m")
    assert [d.code for d in caught.value.diagnostics] == ["E215-git-lfs-pointer"]
