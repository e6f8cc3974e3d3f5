"""No file path sent over the network may leave the model's folder.

A load request may carry a whole config (`config` parameter). Its file-name fields are paths the
backend and the warm-up then open: `default_model_filename` and `cc_model_filenames` (inside the
version folder), `model_warmup ... input_data_file` (inside `<model>/warmup/`). Triton's CVE
history (load-API path traversal) is why these must be plain names here: no separators, no `..`,
nothing absolute, no NUL. Configs read from the repository on disk are the operator's own and are
not restricted by this module.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from server.errors import LoadError
from server.repository import ModelConfig


def _plain_name(value: str) -> bool:
    return value not in ("", ".", "..") and not any(c in value for c in "/\\\x00")


def _inside(value: str) -> bool:
    path = PurePosixPath(value)
    return (
        bool(path.parts)
        and not path.is_absolute()
        and "\\" not in value
        and "\x00" not in value
        and all(part not in ("", ".", "..") for part in path.parts)
    )


def check_override_config(config: ModelConfig) -> None:
    """Raise LoadError when a config sent with a load request names a file outside its model."""
    names = [("default_model_filename", config.default_model_filename)]
    names += [(f"cc_model_filenames['{key}']", value) for key, value in config.cc_model_filenames.items()]
    for field, value in names:
        if value and not _plain_name(value):
            raise LoadError(
                f"config override: {field} '{value}' must be a plain file name inside the version folder"
            )
    for warmup in config.model_warmup:
        for input_name, spec in warmup.inputs.items():
            if spec.WhichOneof("input_data_type") == "input_data_file" and not _inside(spec.input_data_file):
                raise LoadError(
                    f"config override: model_warmup '{warmup.name}' input '{input_name}' input_data_file "
                    f"'{spec.input_data_file}' must be a relative path inside the model's warmup folder"
                )
