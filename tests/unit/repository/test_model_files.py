"""--check-models: ONNX graphs, TorchScript files and model.py against their configs."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from server.repository.validate import validate_repository
from tritonctl.repository.tiny_models import build_onnx_add_sub, build_torchscript_add_sub

ADD_SUB_CONFIG = """name: "m"
platform: "onnxruntime_onnx"
max_batch_size: {mbs}
input [
  {{ name: "INPUT0", data_type: {dtype}, dims: {dims} }},
  {{ name: "{second}", data_type: TYPE_FP32, dims: [ 4 ] }}
]
output [ {{ name: "OUTPUT0", data_type: TYPE_FP32, dims: [ 4 ] }} ]
"""


def _codes(repo: Path, check_models: bool = True) -> list[tuple[str, int | None]]:
    report = validate_repository(repo, check_models=check_models)
    return [(d.code, d.line) for d in report.diagnostics]


def _onnx_repo(tmp_path: Path, **fields: str) -> Path:
    values = {"mbs": "8", "dtype": "TYPE_FP32", "dims": "[ 4 ]", "second": "INPUT1", **fields}
    build_onnx_add_sub(tmp_path / "m" / "1" / "model.onnx", width=4)
    (tmp_path / "m" / "config.pbtxt").write_text(ADD_SUB_CONFIG.format(**values))
    return tmp_path


def test_matching_onnx_config_is_clean(tmp_path: Path) -> None:
    assert _codes(_onnx_repo(tmp_path)) == []


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"dtype": "TYPE_INT32"}, [("E504-model-dtype-mismatch", 5)]),
        ({"dims": "[ -1, 4 ]"}, [("E505-model-rank-mismatch", 5)]),  # the batch axis listed twice
        ({"dims": "[ 5 ]"}, [("E506-model-dim-mismatch", 5)]),
        ({"dims": "[ 4, 4 ]"}, [("E505-model-rank-mismatch", 5)]),
        ({"second": "INPUT9"}, [("E503-model-input-not-in-config", 5), ("E502-model-unknown-tensor", 6)]),
    ],
)
def test_onnx_mismatches(tmp_path: Path, fields: dict[str, str], expected: list[tuple[str, int]]) -> None:
    repo = _onnx_repo(tmp_path, **fields)
    assert _codes(repo) == expected
    assert [c for c, _ in _codes(repo, check_models=False)] == []  # only the model check sees these


def test_onnx_without_dynamic_batch_axis_cannot_batch(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    (tmp_path / "m" / "1").mkdir(parents=True)
    onnx.save(model, str(tmp_path / "m" / "1" / "model.onnx"))
    (tmp_path / "m" / "config.pbtxt").write_text(
        'platform: "onnxruntime_onnx"\nmax_batch_size: 4\n'
        'input [ { name: "x", data_type: TYPE_FP32, dims: [ 3 ] } ]\n'
        'output [ { name: "y", data_type: TYPE_FP32, dims: [ 3 ] } ]\n'
    )
    assert _codes(tmp_path) == [("E507-model-no-batch-axis", 3), ("E507-model-no-batch-axis", 4)]


TORCH_CONFIG = """platform: "pytorch_libtorch"
max_batch_size: 8
input [ {inputs} ]
output [ { name: "OUTPUT__0", data_type: TYPE_FP32, dims: [ 4 ] } ]
"""


def test_torchscript_loads_and_input_count_is_checked(tmp_path: Path) -> None:
    build_torchscript_add_sub(tmp_path / "m" / "1" / "model.pt")
    one = '{ name: "INPUT__0", data_type: TYPE_FP32, dims: [ 4 ] }'
    two = one + ", " + one.replace("__0", "__1")
    (tmp_path / "m" / "config.pbtxt").write_text(TORCH_CONFIG.replace("{inputs}", two))
    assert _codes(tmp_path) == []
    (tmp_path / "m" / "config.pbtxt").write_text(TORCH_CONFIG.replace("{inputs}", one))
    assert _codes(tmp_path) == [("E511-torchscript-input-count", 3)]


def test_state_dict_is_not_torchscript(tmp_path: Path) -> None:
    import torch

    (tmp_path / "m" / "1").mkdir(parents=True)
    torch.save({"weight": torch.zeros(2)}, str(tmp_path / "m" / "1" / "model.pt"))
    (tmp_path / "m" / "config.pbtxt").write_text(TORCH_CONFIG.replace("{inputs}", ""))
    codes = [code for code, _ in _codes(tmp_path)]
    assert "E510-torchscript-unloadable" in codes


def test_model_py_is_parsed_never_run(tmp_path: Path) -> None:
    (tmp_path / "m" / "1").mkdir(parents=True)
    marker = tmp_path / "ran"
    (tmp_path / "m" / "1" / "model.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n\nclass TritonPythonModel:\n    def execute(self, requests):\n"
        "        return []\n"
    )
    (tmp_path / "m" / "config.pbtxt").write_text('backend: "python"')
    assert _codes(tmp_path) == []
    assert not marker.exists()
