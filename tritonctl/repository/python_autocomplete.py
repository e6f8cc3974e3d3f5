"""Run a python model's `TritonPythonModel.auto_complete_config`, as Triton does before loading.

This imports and runs the user's model.py, so `tritonctl config generate` does it only with
`--allow-python`. The object handed to the model offers the documented methods of Triton's
auto-complete config (as_dict, set_max_batch_size, set_dynamic_batching, add_input, add_output,
add_model_transaction_policy).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from server.errors import ConfigError
from server.repository.json_codec import config_to_json


class AutoCompleteConfig:
    """The `auto_complete_model_config` argument of `TritonPythonModel.auto_complete_config`."""

    def __init__(self, config: Any) -> None:
        self._config = config

    def as_dict(self) -> dict[str, Any]:
        return config_to_json(self._config)

    def set_max_batch_size(self, max_batch_size: int) -> None:
        self._config.max_batch_size = int(max_batch_size)

    def set_dynamic_batching(self) -> None:
        self._config.dynamic_batching.SetInParent()

    def add_input(self, tensor: dict[str, Any]) -> None:
        self._add(self._config.input, tensor, "input")

    def add_output(self, tensor: dict[str, Any]) -> None:
        self._add(self._config.output, tensor, "output")

    def add_model_transaction_policy(self, policy: dict[str, Any]) -> None:
        json_format.ParseDict(policy, self._config.model_transaction_policy)

    @staticmethod
    def _add(target: Any, tensor: dict[str, Any], kind: str) -> None:
        if any(existing.name == tensor.get("name") for existing in target):
            raise ValueError(f"{kind} {tensor.get('name')!r} is already in the model config")
        entry = json_format.ParseDict(json.loads(json.dumps(tensor)), type(target.add())())
        target.append(entry)


def _pb_utils_module() -> types.ModuleType:
    """The server's triton_python_backend_utils when available; else a module with just ModelConfig."""
    try:
        from server.backends.python import triton_python_backend_utils as utils  # type: ignore[attr-defined]

        return utils  # type: ignore[no-any-return]
    except ImportError:
        module = types.ModuleType("triton_python_backend_utils")
        module.ModelConfig = AutoCompleteConfig  # type: ignore[attr-defined]
        return module


def complete_python(config: Any, model_file: Path) -> Any:
    """Import model.py and let its auto_complete_config fill `config`; returns `config`."""
    sys.modules.setdefault("triton_python_backend_utils", _pb_utils_module())
    spec = importlib.util.spec_from_file_location(f"_tritonctl_model_{config.name}", model_file)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import {model_file}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's code may raise anything
        raise ConfigError(f"importing {model_file} failed: {type(exc).__name__}: {exc}") from None
    model_class = getattr(module, "TritonPythonModel", None)
    complete = getattr(model_class, "auto_complete_config", None)
    if complete is None:
        raise ConfigError(
            f"{model_file} has no TritonPythonModel.auto_complete_config: give --input/--output instead"
        )
    try:
        complete(AutoCompleteConfig(config))
    except Exception as exc:
        raise ConfigError(f"auto_complete_config failed: {type(exc).__name__}: {exc}") from None
    return config
