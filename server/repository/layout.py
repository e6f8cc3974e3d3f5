"""Repository conventions, written once for the server and the toolkit: model names, backends and
platforms, default model file names, version folders and version policies."""

from __future__ import annotations

import re
from typing import Any

from server.errors import ConfigError

MODEL_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$"
_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)

# platform -> backend, as Triton fills one from the other.
PLATFORM_BACKENDS: dict[str, str] = {
    "onnxruntime_onnx": "onnxruntime",
    "pytorch_libtorch": "pytorch",
    "tensorrt_plan": "tensorrt",
    "tensorflow_savedmodel": "tensorflow",
    "tensorflow_graphdef": "tensorflow",
    "ensemble": "ensemble",
}
# backend -> the platform Triton reports for it (python has none).
BACKEND_PLATFORMS: dict[str, str] = {
    "onnxruntime": "onnxruntime_onnx",
    "pytorch": "pytorch_libtorch",
    "tensorrt": "tensorrt_plan",
}
# The seed writes `platform: "pytorch"`; Triton spells it pytorch_libtorch.
PLATFORM_ALIASES: dict[str, str] = {"pytorch": "pytorch_libtorch"}

DEFAULT_FILENAMES: dict[str, str] = {
    "onnxruntime": "model.onnx",
    "pytorch": "model.pt",
    "tensorrt": "model.plan",
    "python": "model.py",
    "tensorflow_savedmodel": "model.savedmodel",
    "tensorflow_graphdef": "model.graphdef",
    "openvino": "model.xml",
}
KNOWN_BACKENDS = ("onnxruntime", "pytorch", "tensorrt", "python", "ensemble")


def validate_model_name(name: str) -> str:
    """Return `name` if it is a safe model name (no path separators, not "." or ".."); else ConfigError."""
    if name in (".", "..") or not _MODEL_NAME.fullmatch(name):  # fullmatch: "$" would allow "name\n"
        raise ConfigError(
            f"invalid model name {name!r}: use 1-128 letters, digits, '_', '.', '-' "
            "(not starting with '.' or '-', no '/')"
        )
    return name


def is_valid_model_name(name: str) -> bool:
    return name not in (".", "..") and _MODEL_NAME.fullmatch(name) is not None


def backend_of(config: Any) -> str | None:
    """The backend a config names directly or through its platform; None when it names neither."""
    if config.backend:
        return str(config.backend)
    platform = PLATFORM_ALIASES.get(config.platform, config.platform)
    return PLATFORM_BACKENDS.get(platform)


def backend_name(config: Any) -> str:
    """ "onnxruntime" | "pytorch" | "tensorrt" | "python" | "ensemble" (or another named backend)."""
    backend = backend_of(config)
    if backend is None:
        raise ConfigError(
            f"model {config.name!r} names neither a backend nor a known platform "
            f"(platform {config.platform!r}); set backend or platform in config.pbtxt"
        )
    return backend


def default_model_filename(config: Any) -> str | None:
    """The model file each version folder holds; None for ensembles (they have no file)."""
    if config.default_model_filename:
        return str(config.default_model_filename)
    backend = backend_of(config)
    if backend is None or backend == "ensemble":
        return None
    if backend == "tensorflow":
        return DEFAULT_FILENAMES.get(PLATFORM_ALIASES.get(config.platform, config.platform))
    return DEFAULT_FILENAMES.get(backend, "model")


def resolve_versions(config: Any, available: list[int]) -> list[int]:
    """The versions the version_policy selects among those present, ascending.

    latest {num_versions N} (default, N=1) takes the N highest; all takes every one; specific
    takes the listed versions that exist (a listed version that is missing is a validation error).
    """
    present = sorted(set(available))
    policy = config.version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return present
    if choice == "specific":
        wanted = set(policy.specific.versions)
        return [v for v in present if v in wanted]
    count = policy.latest.num_versions if choice == "latest" else 1
    count = max(int(count), 1)
    return present[-count:]
