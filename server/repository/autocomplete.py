"""Auto-complete a model config from its model file, offline, the way Triton's backends do.

ONNX: inputs, outputs and max_batch_size come from the graph (via the `onnx` package, imported
lazily). A model whose every input and output starts with a dynamic axis supports batching; when
the config names no tensors, that axis becomes the batch dimension, `max_batch_size` is set to the
default (4, like Triton's `default-max-batch-size`) and the dynamic batcher is enabled. Python and
other models are left as they are (a python model may complete itself in its worker).
Then `fill_defaults` adds the fields Triton's normalized config always shows (an empty
`dynamic_batching {}` gets `preferred_batch_size: [max_batch_size]`, as in Triton).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.errors import ConfigError
from server.repository.diagnostics import error, summarize
from server.repository.layout import backend_of, default_model_filename
from server.repository.lfs import is_lfs_pointer, lfs_pointer_diagnostic
from server.repository.sequence_rules import sequence_tensor_names

DEFAULT_MAX_BATCH_SIZE = 4

# onnx.TensorProto.DataType names -> Triton data types.
ONNX_TO_TRITON: dict[str, str] = {
    "FLOAT": "TYPE_FP32",
    "UINT8": "TYPE_UINT8",
    "INT8": "TYPE_INT8",
    "UINT16": "TYPE_UINT16",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "STRING": "TYPE_STRING",
    "BOOL": "TYPE_BOOL",
    "FLOAT16": "TYPE_FP16",
    "DOUBLE": "TYPE_FP64",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "BFLOAT16": "TYPE_BF16",
}


@dataclass(frozen=True)
class TensorSignature:
    """One graph input or output as the model file declares it."""

    name: str
    data_type: str  # Triton's TYPE_* name, or "" when the file's type has no Triton equivalent
    dims: tuple[int, ...] | None  # -1 for a dynamic axis; None when the rank is unknown


@dataclass(frozen=True)
class ModelSignature:
    inputs: tuple[TensorSignature, ...]
    outputs: tuple[TensorSignature, ...]

    @property
    def supports_batching(self) -> bool:
        """Every tensor has a known rank >= 1 whose first axis is dynamic."""
        tensors = (*self.inputs, *self.outputs)
        return bool(tensors) and all(t.dims is not None and t.dims[:1] == (-1,) for t in tensors)


def read_onnx_signature(model_file: Path) -> ModelSignature:
    """Inputs (initializers excluded) and outputs of an ONNX file; raises ConfigError if unreadable."""
    import onnx  # heavy: only when a model file is inspected

    if is_lfs_pointer(model_file):  # onnx's own error would be a protobuf decode message
        diagnostic = lfs_pointer_diagnostic(model_file)
        raise ConfigError(summarize([diagnostic]), [diagnostic])
    try:
        model = onnx.load(str(model_file), load_external_data=False)
    except Exception as exc:  # onnx raises several unrelated types for a corrupt file
        diagnostic = error(
            "E501-unreadable-model",
            f"cannot read the ONNX model: {exc}",
            "export the model again (torch.onnx.export / onnx.save) and check the file is complete",
            file=str(model_file),
        )
        raise ConfigError(summarize([diagnostic]), [diagnostic]) from None

    def tensor(value: Any) -> TensorSignature:
        tensor_type = value.type.tensor_type
        type_name = onnx.TensorProto.DataType.Name(tensor_type.elem_type)
        dims: tuple[int, ...] | None = None
        if tensor_type.HasField("shape"):
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)
        return TensorSignature(value.name, ONNX_TO_TRITON.get(type_name, ""), dims)

    initializers = {init.name for init in model.graph.initializer}
    inputs = tuple(tensor(v) for v in model.graph.input if v.name not in initializers)
    outputs = tuple(tensor(v) for v in model.graph.output)
    return ModelSignature(inputs, outputs)


def _model_file(config: Any, model_dir: Path, version: int | None = None) -> Path | None:
    """The model file of the given (or the highest) numeric version folder, if it exists."""
    filename = default_model_filename(config)
    if filename is None:
        return None
    versions = sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    chosen = [version] if version is not None else versions[::-1]
    for number in chosen:
        candidate = model_dir / str(number) / filename
        if candidate.exists():
            return candidate
    return None


def complete_from_signature(config: Any, signature: ModelSignature, max_batch_size: int | None = None) -> Any:
    """Fill inputs/outputs (and batching) that the config leaves out; returns `config`."""
    fully_automatic = not config.input and not config.output
    if max_batch_size is not None:
        config.max_batch_size = max_batch_size
    elif fully_automatic and config.max_batch_size == 0 and signature.supports_batching:
        config.max_batch_size = DEFAULT_MAX_BATCH_SIZE
    batching = config.max_batch_size > 0 and signature.supports_batching

    fed, taken = sequence_tensor_names(config)  # a stateful model's control and state tensors

    def fill(target: Any, tensors: tuple[TensorSignature, ...]) -> None:
        for tensor in tensors:
            if tensor.name in fed or tensor.name in taken:
                continue  # the sequence batcher's, not the client's
            entry = target.add(name=tensor.name)
            if tensor.data_type:
                entry.data_type = tensor.data_type
            dims = list(tensor.dims) if tensor.dims is not None else [-1]
            entry.dims.extend(dims[1:] if batching else dims)

    if not config.input:
        fill(config.input, signature.inputs)
    if not config.output:
        fill(config.output, signature.outputs)
    has_scheduler = config.WhichOneof("scheduling_choice") is not None
    if fully_automatic and config.max_batch_size > 1 and not has_scheduler:
        config.dynamic_batching.SetInParent()
    return config


def autocomplete_config(config: Any, model_dir: Path, max_batch_size: int | None = None) -> Any:
    """Complete `config` from the model file in `model_dir` (ONNX); other backends unchanged.

    Returns a new ModelConfig; `config` itself is not modified.
    """
    completed = type(config)()
    completed.CopyFrom(config)
    if backend_of(completed) == "onnxruntime" and model_dir.is_dir():
        model_file = _model_file(completed, model_dir)
        if model_file is not None and not (completed.input and completed.output):
            complete_from_signature(completed, read_onnx_signature(model_file), max_batch_size)
    return completed


def fill_defaults(config: Any) -> Any:
    """Add the defaults Triton's normalized config always shows; modifies and returns `config`."""
    if not config.HasField("version_policy"):
        config.version_policy.latest.num_versions = 1
    if not config.instance_group and backend_of(config) != "ensemble":
        config.instance_group.add(count=1, kind="KIND_AUTO")
    for index, group in enumerate(config.instance_group):
        if group.count == 0:
            group.count = 1
        if not group.name:
            group.name = f"{config.name}_{index}"
    if (
        config.HasField("dynamic_batching")
        and not config.dynamic_batching.preferred_batch_size
        and config.max_batch_size > 0
    ):
        # Triton shows the batcher's target: with no preferred size it forms full batches.
        config.dynamic_batching.preferred_batch_size.append(config.max_batch_size)
    if config.HasField("sequence_batching") and not config.sequence_batching.max_sequence_idle_microseconds:
        config.sequence_batching.max_sequence_idle_microseconds = 1_000_000  # Triton's default, shown
    if not config.HasField("optimization"):
        config.optimization.input_pinned_memory.enable = True
        config.optimization.output_pinned_memory.enable = True
    filename = default_model_filename(config)
    if filename and not config.default_model_filename:
        config.default_model_filename = filename
    return config
