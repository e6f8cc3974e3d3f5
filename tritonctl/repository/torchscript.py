"""Complete a TorchScript model's config: inputs from the user, outputs by running the module.

TorchScript files keep argument names but no dtypes or shapes, so the inputs must be given
(`--input NAME:DTYPE:DIMS`). The module then runs on zeros twice: batch 1 and variable axes 1,
then batch 2 and variable axes 2. Output axes that change become -1; if every output's first
axis follows the batch, the model batches.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.errors import ConfigError
from server.repository.autocomplete import DEFAULT_MAX_BATCH_SIZE

if TYPE_CHECKING:
    from tritonctl.repository.generate import TensorSpec

TORCH_TYPES = {
    "TYPE_BOOL": "bool",
    "TYPE_UINT8": "uint8",
    "TYPE_INT8": "int8",
    "TYPE_INT16": "int16",
    "TYPE_INT32": "int32",
    "TYPE_INT64": "int64",
    "TYPE_FP16": "float16",
    "TYPE_FP32": "float32",
    "TYPE_FP64": "float64",
    "TYPE_BF16": "bfloat16",
}
TRITON_TYPES = {torch_name: triton for triton, torch_name in TORCH_TYPES.items()}


def forward_arguments(module: Any) -> list[str]:
    return [a.name for a in module.forward.schema.arguments if a.name != "self"]


def load_torchscript(model_file: Path) -> Any:
    import torch

    load: Any = torch.jit.load
    try:
        return load(str(model_file), map_location="cpu")
    except Exception as exc:  # torch raises several types for a bad archive
        raise ConfigError(f"cannot load {model_file} as TorchScript: {str(exc).splitlines()[0]}") from None


class _ForwardFailed(ConfigError):
    """Running the module on zeros failed (wrong --input shapes, or no batch axis)."""


def _run(module: Any, inputs: tuple[TensorSpec, ...], size: int, batch: int | None) -> list[Any]:
    import torch

    tensors = []
    for spec in inputs:
        if spec.data_type not in TORCH_TYPES:
            raise ConfigError(f"input {spec.name}: {spec.data_type} has no torch equivalent")
        shape = [size if d == -1 else d for d in spec.dims]
        if batch is not None:
            shape = [batch, *shape]
        tensors.append(torch.zeros(shape, dtype=getattr(torch, TORCH_TYPES[spec.data_type])))
    try:
        with torch.no_grad():
            result = module(*tensors)
    except Exception as exc:  # whatever the scripted code raises
        shapes = ", ".join(str(list(t.shape)) for t in tensors)
        reason = (str(exc).strip().splitlines() or [repr(exc)])[-1]
        raise _ForwardFailed(f"forward() failed on zeros of shapes {shapes}: {reason}") from None
    outputs = list(result) if isinstance(result, tuple | list) else [result]
    if not all(isinstance(o, torch.Tensor) for o in outputs):
        raise ConfigError("forward() must return a tensor or a tuple/list of tensors; give --output specs")
    return outputs


def _try_batch(module: Any, inputs: tuple[TensorSpec, ...]) -> tuple[list[Any], list[Any]] | None:
    """Outputs for batch 1 and 2 if the module accepts a leading batch axis that its outputs follow."""
    try:
        first, second = _run(module, inputs, 1, 1), _run(module, inputs, 2, 2)
    except _ForwardFailed:  # the module rejects the extra axis: it does not batch
        return None
    follows = all(
        a.dim() >= 1 and a.shape[0] == 1 and b.shape[0] == 2 for a, b in zip(first, second, strict=True)
    )
    return (first, second) if follows else None


def complete_torchscript(
    config: Any,
    model_file: Path,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
    max_batch_size: int | None,
) -> Any:
    """Fill inputs, outputs and max_batch_size of a TorchScript model's config; returns `config`."""
    module = load_torchscript(model_file)
    arguments = forward_arguments(module)
    if not inputs:
        raise ConfigError(
            f"TorchScript keeps no input types or shapes: give one --input NAME:DTYPE:DIMS per forward() "
            f"argument ({', '.join(arguments) or 'none'}), e.g. --input INPUT__0:FP32:3,224,224"
        )
    if len(inputs) != len(arguments):
        raise ConfigError(
            f"forward() takes {len(arguments)} tensors ({', '.join(arguments)}) but {len(inputs)} --input "
            "specs were given"
        )
    batched = None if max_batch_size == 0 else _try_batch(module, inputs)
    if max_batch_size and batched is None:
        raise ConfigError(f"{model_file} does not accept a leading batch axis: use --max-batch-size 0")
    config.max_batch_size = (max_batch_size or DEFAULT_MAX_BATCH_SIZE) if batched else 0
    for spec in inputs:
        config.input.add(name=spec.name, data_type=spec.data_type, dims=list(spec.dims))
    if outputs:
        for spec in outputs:
            config.output.add(name=spec.name, data_type=spec.data_type, dims=list(spec.dims))
        return config
    first, second = batched if batched else (_run(module, inputs, 1, None), _run(module, inputs, 2, None))
    for index, (a, b) in enumerate(zip(first, second, strict=True)):
        shape_a, shape_b = list(a.shape), list(b.shape)
        if batched:
            shape_a, shape_b = shape_a[1:], shape_b[1:]
        dims = [x if x == y else -1 for x, y in zip(shape_a, shape_b, strict=True)]
        dtype = TRITON_TYPES.get(str(a.dtype).removeprefix("torch."))
        if dtype is None:
            raise ConfigError(f"output {index} has type {a.dtype}, which Triton cannot carry")
        config.output.add(name=f"OUTPUT__{index}", data_type=dtype, dims=dims or [1])
    if config.max_batch_size > 1:
        config.dynamic_batching.SetInParent()
    return config
