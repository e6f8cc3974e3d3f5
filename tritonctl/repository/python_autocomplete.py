"""Run a python model's `TritonPythonModel.auto_complete_config`, as the server does before loading.

This imports and runs the user's model.py, so `tritonctl config generate` does it only with
`--allow-python`. The model receives the server's own `triton_python_backend_utils.ModelConfig`,
so the offline result is what the server would compute.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from server.errors import ConfigError
from server.repository.json_codec import config_from_json, config_to_json


def complete_python(config: Any, model_file: Path) -> Any:
    """Import model.py and let its auto_complete_config fill `config`; returns the completed config."""
    # Lazy: the python backend is server machinery, needed here only for --allow-python.
    from server.backends.python import triton_python_backend_utils as pb_utils

    sys.modules.setdefault("triton_python_backend_utils", pb_utils)
    spec = importlib.util.spec_from_file_location(f"_tritonctl_model_{config.name}", model_file)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import {model_file}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's code may raise anything
        raise ConfigError(f"importing {model_file} failed: {type(exc).__name__}: {exc}") from None
    complete = getattr(getattr(module, "TritonPythonModel", None), "auto_complete_config", None)
    if complete is None:
        raise ConfigError(
            f"{model_file} has no TritonPythonModel.auto_complete_config: give --input/--output instead"
        )
    try:
        result = complete(pb_utils.ModelConfig(config_to_json(config)))
    except Exception as exc:
        raise ConfigError(f"auto_complete_config failed: {type(exc).__name__}: {exc}") from None
    completed = config_from_json(result.as_dict())
    config.CopyFrom(completed)
    return config
