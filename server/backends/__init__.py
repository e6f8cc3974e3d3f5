"""Framework adapters that run inside worker processes (see base.py for the seam).

Each backend module imports its framework lazily, inside `load()`, so a worker only pays for the
framework its model needs.
"""

from __future__ import annotations

import importlib

from server.backends.base import Backend, BackendContext

# Triton backend name -> "module:class"
_BACKENDS = {
    "onnxruntime": "server.backends.onnxruntime:OnnxRuntimeBackend",
    "pytorch": "server.backends.pytorch:PyTorchBackend",
    "python": "server.backends.python.backend:PythonBackend",
    "tensorrt": "server.backends.tensorrt:TensorRTBackend",
}


def backend_names() -> list[str]:
    return sorted(_BACKENDS)


def create_backend(name: str, context: BackendContext) -> Backend | None:
    """The backend called `name`, not loaded yet; None when tritonctl has no such backend."""
    target = _BACKENDS.get(name)
    if target is None:
        return None
    module_name, class_name = target.split(":")
    backend_class: type[Backend] = getattr(importlib.import_module(module_name), class_name)
    return backend_class(context)
