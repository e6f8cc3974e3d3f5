"""Which inputs a perf run sends, and the data: from config, metadata or flags; random, zero, JSON, .npy."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tritonctl.perf.control import ModelInfo, TensorInfo
from tritonctl.perf.errors import PerfUsageError
from tritonctl.perf.inputs import InputSpec, build_steps, resolve_inputs
from tritonctl.perf.settings import InputSettings

CONFIG = text_format.Parse(
    """
    name: "m" max_batch_size: 8
    input [ { name: "A" data_type: TYPE_FP32 dims: [ 4 ] },
            { name: "S" data_type: TYPE_STRING dims: [ -1 ] } ]
    """,
    model_config_pb2.ModelConfig(),
)
METADATA = ModelInfo([TensorInfo("A", "FP32", [-1, 4]), TensorInfo("S", "BYTES", [-1, -1])], [])


def test_config_gives_batching_and_types() -> None:
    specs = resolve_inputs(METADATA, CONFIG, InputSettings(shapes={"S": [2]}, batch_size=3))
    assert specs == [InputSpec("A", "FP32", [4], True), InputSpec("S", "BYTES", [2], True)]
    assert specs[0].full_shape(3) == [3, 4]


def test_variable_dims_need_a_shape() -> None:
    with pytest.raises(PerfUsageError, match=r"--shape S:DIMS \(one sample"):
        resolve_inputs(METADATA, CONFIG, InputSettings())


def test_unknown_input_name_is_refused() -> None:
    with pytest.raises(PerfUsageError, match="no input 'B'"):
        resolve_inputs(METADATA, CONFIG, InputSettings(shapes={"B": [1]}))


def test_metadata_only_takes_leading_minus_one_as_batch() -> None:
    info = ModelInfo([TensorInfo("x", "INT64", [-1, 3]), TensorInfo("y", "FP32", [2, 2])], [])
    specs = resolve_inputs(info, None, InputSettings())
    assert specs == [InputSpec("x", "INT64", [3], True), InputSpec("y", "FP32", [2, 2], False)]


def test_flags_describe_inputs_when_the_server_does_not() -> None:
    info = ModelInfo([], [])
    with pytest.raises(PerfUsageError, match="does not describe"):
        resolve_inputs(info, None, InputSettings())
    specs = resolve_inputs(info, None, InputSettings(shapes={"x": [1, 4]}, datatypes={"x": "INT32"}))
    assert specs == [InputSpec("x", "INT32", [1, 4], False)]


def test_metadata_without_datatype_needs_dtype_flag() -> None:
    info = ModelInfo([TensorInfo("x", "", [1, 4])], [])
    with pytest.raises(PerfUsageError, match="--dtype x:FP32"):
        resolve_inputs(info, None, InputSettings())


def test_batch_size_on_a_model_that_does_not_batch() -> None:
    info = ModelInfo([TensorInfo("x", "FP32", [4])], [])
    with pytest.raises(PerfUsageError, match="does not batch"):
        resolve_inputs(info, None, InputSettings(batch_size=2))


SPECS = [InputSpec("A", "FP32", [4], True), InputSpec("S", "BYTES", [2], True)]


def test_random_data_is_seeded_and_shaped() -> None:
    first = build_steps(SPECS, InputSettings(seed=7, batch_size=2, string_length=5))
    again = build_steps(SPECS, InputSettings(seed=7, batch_size=2, string_length=5))
    other = build_steps(SPECS, InputSettings(seed=8, batch_size=2, string_length=5))
    assert first[0]["A"].shape == (2, 4) and first[0]["A"].dtype == np.float32
    assert first[0]["S"].shape == (2, 2) and len(first[0]["S"][0, 0]) == 5
    np.testing.assert_array_equal(first[0]["A"], again[0]["A"])
    assert not np.array_equal(first[0]["A"], other[0]["A"])


def test_zero_data() -> None:
    step = build_steps(SPECS[:1], InputSettings(source="zero"))[0]
    assert step["A"].tolist() == [[0.0, 0.0, 0.0, 0.0]]


def test_perf_analyzer_json(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    raw = np.arange(4, dtype=np.float32).tobytes()
    path.write_text(
        json.dumps(
            {
                "data": [
                    {"A": [1, 2, 3, 4], "S": ["ab", "cd"]},
                    {
                        "A": {"b64": base64.b64encode(raw).decode()},
                        "S": {"content": ["x", "y"], "shape": [2]},
                    },
                ]
            }
        )
    )
    steps = build_steps(SPECS, InputSettings(source=str(path), batch_size=2))
    assert len(steps) == 2
    assert steps[0]["A"].tolist() == [[1, 2, 3, 4]] * 2  # one sample, repeated to the batch size
    assert steps[0]["S"][1].tolist() == [b"ab", b"cd"]
    assert steps[1]["A"][0].tolist() == [0, 1, 2, 3]


def test_perf_analyzer_json_errors(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text(json.dumps({"data": [{"A": [1, 2, 3]}]}))
    with pytest.raises(PerfUsageError, match="lacks inputs"):
        build_steps(SPECS, InputSettings(source=str(path)))
    with pytest.raises(PerfUsageError, match="do not fit the shape"):
        build_steps(SPECS[:1], InputSettings(source=str(path)))
    path.write_text("{")
    with pytest.raises(PerfUsageError, match="cannot read JSON"):
        build_steps(SPECS, InputSettings(source=str(path)))


def test_npy_file_and_folder(tmp_path: Path) -> None:
    np.save(tmp_path / "A.npy", np.full((4,), 2.5, dtype=np.float64))
    step = build_steps(SPECS[:1], InputSettings(source=str(tmp_path / "A.npy"), batch_size=3))[0]
    assert step["A"].shape == (3, 4) and step["A"].dtype == np.float32
    step = build_steps(SPECS[:1], InputSettings(source=str(tmp_path)))[0]
    assert step["A"].tolist() == [[2.5] * 4]
    with pytest.raises(PerfUsageError, match=r"missing S\.npy"):
        build_steps(SPECS, InputSettings(source=str(tmp_path)))
    with pytest.raises(PerfUsageError, match="batch of 2"):
        np.save(tmp_path / "B.npy", np.zeros((2, 4), dtype=np.float32))
        build_steps(SPECS[:1], InputSettings(source=str(tmp_path / "B.npy"), batch_size=3))
