"""The ModelConfig protobuf module, loaded without importing the tritonclient.grpc package.

`from tritonclient.grpc import model_config_pb2` first runs tritonclient.grpc's __init__, which
imports the whole gRPC client (~0.5 s); a worker only needs the message classes, and pays that on
every start. Loading the generated file under its real module name keeps later imports of
tritonclient.grpc (by a user's model, say) consistent: they find this module in sys.modules.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

_NAME = "tritonclient.grpc.model_config_pb2"


def model_config_pb2() -> ModuleType:
    loaded = sys.modules.get(_NAME)
    if loaded is not None:
        return loaded
    package = importlib.util.find_spec("tritonclient")
    if package is None or package.origin is None:
        raise ImportError("tritonclient is not installed")
    spec = importlib.util.spec_from_file_location(
        _NAME, Path(package.origin).parent / "grpc" / "model_config_pb2.py"
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot find {_NAME}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_NAME] = module
    spec.loader.exec_module(module)
    return module
