"""`tritonctl validate` and `config generate` on stateful models (sequence_batching)."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from server.repository.validate import validate_repository
from tests.support.sequence_models import write_onnx_accumulator, write_python_accumulator
from tritonctl.repository.generate import generate_config


def _edit(model_dir: Path, change: object, extra: str = "") -> None:
    path = model_dir / "config.pbtxt"
    config = text_format.Parse(path.read_text(), mc.ModelConfig())
    change(config)  # type: ignore[operator]
    path.write_text(text_format.MessageToString(config) + extra)


def _codes(repo: Path) -> dict[str, set[str]]:
    report = validate_repository(repo)
    found: dict[str, set[str]] = {}
    for diagnostic in report.errors + report.warnings:
        found.setdefault(diagnostic.model or "", set()).add(diagnostic.code)
    return found


def test_good_sequence_models_validate_clean_and_their_control_inputs_are_not_client_inputs(
    tmp_path: Path,
) -> None:
    write_onnx_accumulator(tmp_path, "onnx_acc")
    write_onnx_accumulator(tmp_path, "onnx_oldest", strategy="oldest", corrid_type="TYPE_STRING")
    write_python_accumulator(tmp_path, "py_acc", max_batch_size=0)
    assert _codes(tmp_path) == {}


def test_control_inputs_types_and_states_are_checked_against_the_onnx_file(tmp_path: Path) -> None:
    def break_it(config: mc.ModelConfig) -> None:
        batching = config.sequence_batching
        batching.control_input[0].name = "BEGIN"  # not a graph input
        end = batching.control_input[1].control[0]
        end.ClearField("int32_false_true")
        end.fp32_false_true.extend([0, 1])  # the graph's END is INT32
        batching.state[0].output_name = "NOPE"

    _edit(write_onnx_accumulator(tmp_path, "bad"), break_it)
    codes = _codes(tmp_path)["bad"]
    assert {
        "E508-model-missing-control-input",
        "E509-model-control-type",
        "E512-model-missing-state",
    } <= codes


def test_config_rules_oldest_candidates_corrid_type_and_dynamic_with_sequence(tmp_path: Path) -> None:
    def no_candidates(config: mc.ModelConfig) -> None:
        config.sequence_batching.oldest.max_candidate_sequences = 0

    def float_corrid(config: mc.ModelConfig) -> None:
        config.sequence_batching.control_input[3].control[0].data_type = mc.TYPE_FP32

    _edit(write_onnx_accumulator(tmp_path, "oldest", strategy="oldest"), no_candidates)
    _edit(write_onnx_accumulator(tmp_path, "corrid"), float_corrid)
    _edit(write_onnx_accumulator(tmp_path, "both"), lambda config: None, "\ndynamic_batching { }\n")
    codes = _codes(tmp_path)
    assert "E352-sequence-oldest-candidates" in codes["oldest"]
    assert "E351-sequence-control-type" in codes["corrid"]
    assert "E105-conflicting-fields" in codes["both"]  # one scheduler per model, as in Triton


def test_config_generate_writes_sequence_batching_for_an_onnx_model_with_control_inputs(
    tmp_path: Path,
) -> None:
    model_dir = write_onnx_accumulator(tmp_path, "acc")
    (model_dir / "config.pbtxt").unlink()
    config = generate_config(model_dir)
    assert [tensor.name for tensor in config.input] == ["INPUT"]
    assert not config.HasField("dynamic_batching")
    batching = config.sequence_batching
    assert {c.name for c in batching.control_input} == {"START", "END", "READY", "CORRID"}
    assert [(s.input_name, s.output_name) for s in batching.state] == [("STATE_IN", "STATE_OUT")]
    oldest = generate_config(model_dir, sequence="oldest")
    assert oldest.sequence_batching.oldest.max_candidate_sequences == 4
