"""Conventions: model names, backends and platforms, default file names, version policies."""

from __future__ import annotations

import pytest

from server.errors import ConfigError
from server.repository import (
    backend_name,
    default_model_filename,
    parse_model_config,
    resolve_versions,
    validate_model_name,
)


@pytest.mark.parametrize("name", ["resnet50", "my_model.v2", "a-b", "_x", "9"])
def test_valid_model_names(name: str) -> None:
    assert validate_model_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "../etc", "a/b", "-x", ".hidden", "a b", "x" * 129])
def test_invalid_model_names(name: str) -> None:
    with pytest.raises(ConfigError):
        validate_model_name(name)


@pytest.mark.parametrize(
    ("text", "backend", "filename"),
    [
        ('platform: "onnxruntime_onnx"', "onnxruntime", "model.onnx"),
        ('backend: "onnxruntime"', "onnxruntime", "model.onnx"),
        ('platform: "pytorch_libtorch"', "pytorch", "model.pt"),
        ('platform: "pytorch"', "pytorch", "model.pt"),
        ('platform: "tensorrt_plan"', "tensorrt", "model.plan"),
        ('backend: "python"', "python", "model.py"),
        ('platform: "ensemble"', "ensemble", None),
        ('backend: "python" default_model_filename: "main.py"', "python", "main.py"),
    ],
)
def test_backend_and_default_filename(text: str, backend: str, filename: str | None) -> None:
    config = parse_model_config(text)
    assert backend_name(config) == backend
    assert default_model_filename(config) == filename


def test_backend_name_without_backend_or_platform_raises() -> None:
    with pytest.raises(ConfigError, match="neither a backend nor a known platform"):
        backend_name(parse_model_config('name: "m"'))


@pytest.mark.parametrize(
    ("policy", "available", "expected"),
    [
        ("", [1, 3, 2], [3]),
        ("version_policy { latest { num_versions: 2 } }", [1, 3, 2], [2, 3]),
        ("version_policy { latest { num_versions: 5 } }", [1, 2], [1, 2]),
        ("version_policy { all { } }", [3, 1], [1, 3]),
        ("version_policy { specific { versions: [1, 3, 7] } }", [1, 2, 3], [1, 3]),
        ("", [], []),
    ],
)
def test_resolve_versions(policy: str, available: list[int], expected: list[int]) -> None:
    assert resolve_versions(parse_model_config(policy), available) == expected
