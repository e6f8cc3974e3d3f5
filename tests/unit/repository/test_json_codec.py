"""ModelConfig <-> Triton's HTTP config JSON."""

from __future__ import annotations

import json

import pytest

from server.errors import ConfigError
from server.repository import config_from_json, config_to_json, parse_model_config


def test_int64_are_numbers_and_defaults_are_present() -> None:
    config = parse_model_config(
        'name: "m" max_batch_size: 8 input [ { name: "x" data_type: TYPE_FP32 dims: [ -1, 3 ] } ]'
        " dynamic_batching { max_queue_delay_microseconds: 100 preferred_batch_size: [4] }"
        ' parameters { key: "p" value { string_value: "v" } }'
    )
    data = config_to_json(config)
    assert data["max_batch_size"] == 8
    assert data["input"][0]["dims"] == [-1, 3]
    assert data["input"][0]["data_type"] == "TYPE_FP32"
    assert data["dynamic_batching"]["max_queue_delay_microseconds"] == 100
    assert data["dynamic_batching"]["preferred_batch_size"] == [4]
    assert data["parameters"] == {"p": {"string_value": "v"}}
    # fields left at their defaults are still printed, as Triton does
    assert data["platform"] == "" and data["output"] == [] and data["input"][0]["optional"] is False
    json.dumps(data)  # plain JSON types only


def test_round_trip() -> None:
    config = parse_model_config(
        'name: "m" version_policy { specific { versions: [1, 2] } } max_batch_size: 4'
    )
    assert config_from_json(config_to_json(config)) == config
    assert config_from_json(json.dumps(config_to_json(config))) == config


@pytest.mark.parametrize("bad", ['{"max_batch_size": "x"}', '{"nope": 1}', "[1]", "{"])
def test_bad_json_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError):
        config_from_json(bad)
