"""Repository scan and the config a model runs with (server-level entries, alias, auto-complete)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2

from server.errors import ConfigError
from server.repository import (
    autocomplete_config,
    check_model_config,
    load_model_config,
    parse_model_config,
    parse_server_config,
    scan_repository,
)
from tritonctl.repository.tiny_models import build_onnx_add_sub

SERVER_TEXT = """model_config_list: [
{
config: {
name: "from_server"
backend: "python"
max_batch_size: 4
}
}
]
"""


def _python_model(repo: Path, name: str, config: str | None) -> Path:
    model_dir = repo / name
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.py").write_text(
        "class TritonPythonModel:\n    def execute(self, r):\n        return []\n"
    )
    if config is not None:
        (model_dir / "config.pbtxt").write_text(config)
    return model_dir


def test_scan_lists_models_versions_and_sources(tmp_path: Path) -> None:
    _python_model(tmp_path, "a", 'backend: "python"')
    (tmp_path / "a" / "3").mkdir()
    (tmp_path / "a" / "notes").mkdir()
    _python_model(tmp_path, "from_server", None)
    (tmp_path / ".git").mkdir()
    server_config = parse_server_config(SERVER_TEXT, str(tmp_path / "config.pbtxt"))
    models = scan_repository(tmp_path, server_config)
    assert sorted(models) == ["a", "from_server"]
    assert models["a"].versions == [1, 3]
    assert models["a"].config_source == str(tmp_path / "a" / "config.pbtxt")
    assert models["from_server"].config_source == "<server config>:2"
    assert models["from_server"].config is not None and models["from_server"].config.max_batch_size == 4
    assert all(entry.ok for entry in models.values())


def test_load_model_config_defaults_name_alias_and_backend(tmp_path: Path) -> None:
    model_dir = tmp_path / "resnet"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.pt").write_bytes(b"")
    (model_dir / "config.pbtxt").write_text('platform: "pytorch"\nmax_batch_size: 16')
    config = load_model_config(model_dir, autocomplete=False)
    assert (config.name, config.platform, config.backend) == ("resnet", "pytorch_libtorch", "pytorch")


def test_load_model_config_fills_the_defaults_the_server_needs(tmp_path: Path) -> None:
    model_dir = _python_model(tmp_path, "m", 'backend: "python"\ninstance_group [ { kind: KIND_CPU } ]')
    config = load_model_config(model_dir)
    assert config.version_policy.latest.num_versions == 1
    assert (config.instance_group[0].count, config.instance_group[0].name) == (1, "m_0")
    assert config.default_model_filename == "model.py"
    bare = load_model_config(_python_model(tmp_path, "bare", 'backend: "python"'))
    assert bare.instance_group[0].kind == bare.instance_group[0].KIND_AUTO


def test_server_level_entry_is_used_without_folder_config(tmp_path: Path) -> None:
    model_dir = _python_model(tmp_path, "from_server", None)
    config = load_model_config(model_dir, parse_server_config(SERVER_TEXT))
    assert (config.name, config.max_batch_size) == ("from_server", 4)


def test_both_places_is_an_error_naming_both(tmp_path: Path) -> None:
    model_dir = _python_model(tmp_path, "from_server", 'backend: "python"')
    server_path = tmp_path / "config.pbtxt"
    with pytest.raises(ConfigError) as caught:
        load_model_config(model_dir, parse_server_config(SERVER_TEXT, str(server_path)))
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.code == "E201-config-in-two-places"
    assert str(model_dir / "config.pbtxt") in diagnostic.message and f"{server_path}:2" in diagnostic.message


def test_missing_config_and_name_mismatch_raise(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "1").mkdir(parents=True)
    with pytest.raises(ConfigError, match="E203-missing-config"):
        load_model_config(empty)
    with pytest.raises(ConfigError, match="E204-name-mismatch"):
        load_model_config(_python_model(tmp_path, "m", 'name: "other" backend: "python"'))
    with pytest.raises(ConfigError, match="E101-unknown-field"):
        load_model_config(_python_model(tmp_path, "bad", "nope: 1"))


def test_onnx_autocomplete_without_any_config(tmp_path: Path) -> None:
    model_dir = tmp_path / "onnx_model"
    build_onnx_add_sub(model_dir / "1" / "model.onnx", width=4)
    config = load_model_config(model_dir)  # no config.pbtxt at all, like Triton's auto-complete
    assert (config.platform, config.backend, config.max_batch_size) == ("onnxruntime_onnx", "onnxruntime", 4)
    assert [(t.name, list(t.dims)) for t in config.input] == [("INPUT0", [4]), ("INPUT1", [4])]
    assert [t.name for t in config.output] == ["OUTPUT0", "OUTPUT1"]
    assert config.input[0].data_type == model_config_pb2.TYPE_FP32
    assert config.HasField("dynamic_batching")
    assert check_model_config(config, model_dir) == []


def test_onnx_autocomplete_keeps_what_the_config_says(tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    build_onnx_add_sub(model_dir / "1" / "model.onnx", width=4)
    written = parse_model_config(
        'platform: "onnxruntime_onnx" max_batch_size: 0\n'
        'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1, 4 ] },'
        ' { name: "INPUT1" data_type: TYPE_FP32 dims: [ -1, 4 ] } ]'
    )
    completed = autocomplete_config(written, model_dir)
    assert completed.max_batch_size == 0  # the config lists tensors: batching is not switched on
    assert [(t.name, list(t.dims)) for t in completed.output] == [("OUTPUT0", [-1, 4]), ("OUTPUT1", [-1, 4])]
    assert not completed.HasField("dynamic_batching")
    assert not written.output  # the argument is not modified


def test_empty_dynamic_batching_gets_preferred_batch_size_max_batch_size(tmp_path: Path) -> None:
    empty = load_model_config(
        _python_model(tmp_path, "empty", 'backend: "python"\nmax_batch_size: 8\ndynamic_batching { }')
    )
    assert list(empty.dynamic_batching.preferred_batch_size) == [8]
    chosen = load_model_config(
        _python_model(
            tmp_path,
            "chosen",
            'backend: "python"\nmax_batch_size: 8\ndynamic_batching { preferred_batch_size: [2, 4] }',
        )
    )
    assert list(chosen.dynamic_batching.preferred_batch_size) == [2, 4]  # what the user wrote stays
    unbatched = load_model_config(_python_model(tmp_path, "plain", 'backend: "python"\nmax_batch_size: 8'))
    assert not unbatched.HasField("dynamic_batching")  # no batcher is switched on
    as_written = load_model_config(
        _python_model(tmp_path, "raw", 'backend: "python"\nmax_batch_size: 8\ndynamic_batching { }'),
        autocomplete=False,
    )
    assert not as_written.dynamic_batching.preferred_batch_size
