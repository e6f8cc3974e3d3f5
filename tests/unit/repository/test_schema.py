"""config.pbtxt parsing: the real inference.ModelConfig, errors in plain words with their positions."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.errors import ConfigError
from server.repository import (
    ModelConfig,
    backend_parameters,
    load_server_config,
    parse_model_config,
    parse_server_config,
)
from server.repository.locations import index_text

SEED_SERVER_CONFIG = Path(__file__).resolve().parents[2] / "corpus/valid/seed_server_config/repo/config.pbtxt"


def test_parses_into_tritonclient_model_config() -> None:
    config = parse_model_config(
        'name: "m"\nmax_batch_size: 8\ninput [ { name: "x" data_type: TYPE_FP32 dims: [3] } ]'
    )
    assert isinstance(config, ModelConfig)
    assert config.max_batch_size == 8
    assert list(config.input[0].dims) == [3]


@pytest.mark.parametrize(
    ("text", "code", "line", "column", "words"),
    [
        ('name: "m"\nmax_batch: 4', "E101-unknown-field", 2, 1, 'did you mean "max_batch_size"'),
        ("max_batch_size: $", "E103-wrong-type", 1, 17, 'field "max_batch_size" expects a whole number'),
        ("instance_group [ { kind: KIND_GPUS } ]", "E102-bad-enum-value", 1, 26, "did you mean KIND_GPU"),
        ('name: "a"\nname: "b"', "E104-duplicate-field", 2, 7, 'field "name" is set more than once'),
        ("input { name: 'a'", "E100-syntax", 1, 15, 'expected "}"'),
    ],
)
def test_parse_errors_say_what_and_where(text: str, code: str, line: int, column: int, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_model_config(text, "repo/m/config.pbtxt")
    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.code, diagnostic.line, diagnostic.column) == (code, line, column)
    assert diagnostic.file == "repo/m/config.pbtxt"
    assert words in f"{diagnostic.message} {diagnostic.fix}"
    assert f"repo/m/config.pbtxt:{line}:{column}" in str(caught.value)
    assert "Expected integer, got" not in str(caught.value)


def test_seed_server_config_parses_verbatim_with_comments() -> None:
    text = SEED_SERVER_CONFIG.read_text()
    assert "# 4GB" in text
    server_config = load_server_config(SEED_SERVER_CONFIG)
    (entry,) = server_config.model_config_list
    assert entry.config.name == "my_resnet"
    assert entry.config.instance_group[0].count == 2
    assert list(entry.config.instance_group[0].gpus) == [0]
    assert backend_parameters(server_config, "python") == {"shm-default-size": "4294967296"}
    assert backend_parameters(server_config, "onnxruntime") == {}
    assert backend_parameters(None, "python") == {}


def test_later_backend_config_entries_win() -> None:
    server_config = parse_server_config(
        'backend_config [ { backend: "python" parameters { key: "a" value: "1" } },'
        ' { backend: "python" parameters { key: "a" value: "2" } parameters { key: "b" value: "3" } } ]'
    )
    assert backend_parameters(server_config, "python") == {"a": "2", "b": "3"}


def test_server_config_errors_name_its_file(tmp_path: Path) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_text("model_config_list [ { confg { } } ]")
    with pytest.raises(ConfigError) as caught:
        load_server_config(path)
    (diagnostic,) = caught.value.diagnostics
    assert (diagnostic.code, diagnostic.file, diagnostic.line) == ("E101-unknown-field", str(path), 1)
    assert 'did you mean "config"' in diagnostic.fix


def test_missing_server_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_server_config(tmp_path / "nope.pbtxt")
    assert caught.value.diagnostics[0].code == "E110-unreadable-config"


def test_locations_index_every_occurrence() -> None:
    text = (
        'name: "m" # comment\ninstance_group [\n  { gpus: [0, 1] },\n  { count: 2 }\n]\n'
        'x { key: "k" value: "v" }\n'
    )
    locations = index_text(text)
    name = locations.find("name")
    assert name is not None and name.line == 1
    gpu = locations.find("instance_group[0].gpus[1]")
    assert gpu is not None and (gpu.line, gpu.column) == (3, 15)
    count = locations.find("instance_group[1].count")
    assert count is not None and (count.line, count.column) == (4, 5)
    fallback = locations.find("instance_group[1].kind")  # absent: points at its group
    assert fallback is not None and fallback.line == 4
    assert locations.count("instance_group") == 2
    assert locations.map_entry("x", "k") == "x[0]"
    assert locations.find("nothing") is None
