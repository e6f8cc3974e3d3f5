"""`tritonctl config generate`: write a model's config.pbtxt from its model file, offline.

ONNX: names, types, dims and the batch axis come from the graph (like Triton's auto-complete).
TorchScript: the file has no types or shapes, so inputs come from `--input NAME:DTYPE:DIMS`; the
outputs are found by running the scripted module on zeros (twice, so that axes which follow a
variable input axis become -1). Python: `TritonPythonModel.auto_complete_config` is called only
when the user allows running model.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from server.errors import ConfigError
from server.repository.autocomplete import (
    DEFAULT_MAX_BATCH_SIZE,
    complete_from_signature,
    read_onnx_signature,
)
from server.repository.layout import default_model_filename
from server.repository.loader import normalize_identity, version_folders
from server.repository.schema import ModelConfig
from tritonctl.repository.sequence_generate import add_sequence_batching

_SPEC = re.compile(r"^(?P<name>[^:]+):(?P<dtype>[A-Za-z0-9_]+):(?P<dims>-?\d+(?:,-?\d+)*)$")


@dataclass(frozen=True)
class TensorSpec:
    """A tensor given on the command line as NAME:DTYPE:DIMS, e.g. `x:FP32:3,224,224`."""

    name: str
    data_type: str  # TYPE_* name
    dims: tuple[int, ...]


def parse_tensor_spec(text: str) -> TensorSpec:
    """Parse NAME:DTYPE:DIMS (DTYPE with or without TYPE_; DIMS comma separated, -1 variable)."""
    from tritonclient.grpc import model_config_pb2

    match = _SPEC.match(text.strip())
    if match is None:
        raise ConfigError(f"bad tensor spec {text!r}: expected NAME:DTYPE:DIMS, e.g. INPUT0:FP32:3,224,224")
    dtype = match["dtype"].upper()
    dtype = dtype if dtype.startswith("TYPE_") else f"TYPE_{dtype}"
    known = [v.name for v in model_config_pb2.DataType.DESCRIPTOR.values if v.name != "TYPE_INVALID"]
    if dtype not in known:
        valid = ", ".join(name.removeprefix("TYPE_") for name in known)
        raise ConfigError(f"bad data type {match['dtype']!r} in {text!r}: use one of {valid}")
    return TensorSpec(match["name"], dtype, tuple(int(d) for d in match["dims"].split(",")))


def _model_file(config: Any, model_dir: Path) -> Path:
    filename = default_model_filename(config)
    for version in reversed(version_folders(model_dir)):
        candidate = model_dir / str(version) / (filename or "")
        if filename and candidate.exists():
            return candidate
    raise ConfigError(
        f"no model file found in {model_dir}: expected <version>/{filename or 'model.<ext>'} "
        "(model.onnx, model.pt, model.plan or model.py)"
    )


def _add_tensors(target: Any, specs: tuple[TensorSpec, ...]) -> None:
    for spec in specs:
        target.add(name=spec.name, data_type=spec.data_type, dims=list(spec.dims))


def generate_config(
    model_dir: Path,
    *,
    max_batch_size: int | None = None,
    inputs: tuple[TensorSpec, ...] = (),
    outputs: tuple[TensorSpec, ...] = (),
    allow_python: bool = False,
    sequence: str | None = None,
    sequence_states: tuple[tuple[str, str], ...] = (),
) -> Any:
    """A new ModelConfig for the model in `model_dir`, from its model file (see module doc).

    `sequence` ("direct" / "oldest") adds `sequence_batching` (sequence_generate.py), which an
    ONNX graph with START/END/READY/CORRID inputs gets anyway."""
    config = ModelConfig(name=model_dir.name)
    normalize_identity(config, model_dir.name, model_dir)
    backend = config.backend
    model_file = _model_file(config, model_dir)
    if backend == "onnxruntime":
        signature = read_onnx_signature(model_file)
        if max_batch_size and not signature.supports_batching:
            raise ConfigError(
                f"{model_file} has no dynamic first axis on every input and output, so it cannot batch; "
                "use --max-batch-size 0"
            )
        if max_batch_size is None and signature.supports_batching:
            max_batch_size = DEFAULT_MAX_BATCH_SIZE
        _add_tensors(config.input, inputs)
        _add_tensors(config.output, outputs)
        config.max_batch_size = max_batch_size or 0
        stateful = add_sequence_batching(config, signature, sequence, sequence_states)
        complete_from_signature(config, signature, max_batch_size or 0)
        if config.max_batch_size > 1 and not stateful:
            config.dynamic_batching.SetInParent()
    elif backend == "pytorch":
        from tritonctl.repository.torchscript import complete_torchscript

        complete_torchscript(config, model_file, inputs, outputs, max_batch_size)
    elif backend == "python":
        from tritonctl.repository.python_autocomplete import complete_python

        if max_batch_size is not None:
            config.max_batch_size = max_batch_size
        _add_tensors(config.input, inputs)
        _add_tensors(config.output, outputs)
        if allow_python:
            complete_python(config, model_file)
        elif not inputs and not outputs:
            raise ConfigError(
                "a python model describes its tensors in model.py's auto_complete_config, which means "
                "running model.py: pass --allow-python, or give --input/--output NAME:DTYPE:DIMS"
            )
    else:
        if not inputs or not outputs:
            raise ConfigError(
                f"a {backend} model file cannot be inspected here: give --input and --output NAME:DTYPE:DIMS"
            )
        config.max_batch_size = max_batch_size or 0
        _add_tensors(config.input, inputs)
        _add_tensors(config.output, outputs)
    return config


def config_text(config: Any, header: str = "") -> str:
    """config.pbtxt text of `config`, with an optional leading comment."""
    body = text_format.MessageToString(config)
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    return comment + body
