"""The pytorch backend (`pytorch_libtorch`, TorchScript model.pt).

Tensors are matched to forward()'s arguments the way Triton's libtorch backend does: names that
all follow `<name>__<index>` (INPUT__0, OUTPUT__1) map by index; otherwise inputs map by
forward()'s argument names and outputs by their order in the config. Threads: model parameters
INTRA_OP_THREAD_COUNT / INTER_OP_THREAD_COUNT (Triton's keys), default 1 intra-op thread per
instance since instances share the cores.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from server.backends.base import (
    Backend,
    Batch,
    NDArray,
    OutputArray,
    Request,
    RequestOutputs,
    run_each,
    split_rows,
)
from server.backends.sequence_fields import sequence_input_names, sequence_output_names
from server.errors import BackendError, LoadError, ServerError

_INDEXED = re.compile(r"^.+__(\d+)$")


def indexed_positions(names: list[str]) -> list[int] | None:
    """Positions from `<name>__<index>` names, or None unless every name follows that pattern."""
    matches = [_INDEXED.match(name) for name in names]
    if not names or any(m is None for m in matches):
        return None
    return [int(m.group(1)) for m in matches if m is not None]


def warm_up() -> None:
    """Script, save, load and run an identity module once. What torch sets up once per process
    (~5 MiB measured: the TorchScript loader and interpreter) is then paid when a shared host
    starts, not charged to the first model it loads (5.6 MiB for a model that holds 128 KiB)."""
    import io

    import torch

    saved = io.BytesIO()
    script: Any = torch.jit.script  # untyped in torch's stubs
    save: Any = torch.jit.save
    load: Any = torch.jit.load
    save(script(torch.nn.Identity()), saved)
    saved.seek(0)
    module = load(saved, map_location="cpu")
    with torch.inference_mode():
        module(torch.ones(1))


class PyTorchBackend(Backend):
    def load(self) -> None:
        import torch

        self.torch = torch
        torch.set_num_threads(_positive(self.context.parameter("INTRA_OP_THREAD_COUNT", "1")))
        inter = self.context.parameter("INTER_OP_THREAD_COUNT")
        if inter:
            torch.set_num_interop_threads(_positive(inter))
        if self.context.uses_gpu and not torch.cuda.is_available():
            raise LoadError(
                f"instance '{self.context.instance_name}' is KIND_GPU, but torch sees no CUDA device "
                f"(torch {torch.__version__})"
            )
        self.device = torch.device("cuda:0" if self.context.uses_gpu else "cpu")
        path = self.context.model_file("model.pt")
        if not path.is_file():
            raise LoadError(f"TorchScript model file '{path}' does not exist")
        load_script: Any = torch.jit.load  # untyped in torch's stubs
        self.model = load_script(str(path), map_location=self.device)
        self.model.eval()
        arguments = [argument.name for argument in self.model.forward.schema.arguments[1:]]
        self.input_order = self._input_order(arguments)
        outputs = self.output_names()
        self.output_positions = indexed_positions(outputs) or list(range(len(outputs)))
        self.max_batch_size = int(self.context.config.max_batch_size)

    def input_names(self) -> list[str]:
        """Configured inputs, then a stateful model's control and state inputs (fed by the batcher)."""
        return [*super().input_names(), *sequence_input_names(self.context.config)]

    def output_names(self) -> list[str]:
        """Configured outputs, then a stateful model's state outputs (forward() returns them last)."""
        return [*super().output_names(), *sequence_output_names(self.context.config)]

    def _input_order(self, arguments: list[str]) -> list[str]:
        """Config input names in forward()'s positional order."""
        names = self.input_names()
        positions = indexed_positions(names)
        if positions is None:
            missing = [name for name in names if name not in arguments]
            if missing:
                raise LoadError(
                    f"model '{self.context.model_name}': input {missing[0]!r} is neither named "
                    f"'<name>__<index>' nor an argument of forward({', '.join(arguments)})"
                )
            positions = [arguments.index(name) for name in names]
        if sorted(positions) != list(range(len(names))):
            raise LoadError(
                f"model '{self.context.model_name}': input indices {sorted(positions)} "
                f"must run 0..{len(names) - 1}"
            )
        return [name for _, name in sorted(zip(positions, names, strict=True))]

    def execute(self, batch: Batch) -> list[RequestOutputs | ServerError]:
        if self.max_batch_size > 0 and len(batch.requests) > 1:
            stacked = {name: tensor.stacked() for name, tensor in batch.inputs.items()}
            if all(stacked.get(name) is not None for name in self.input_order):
                outputs = self._forward([stacked[name] for name in self.input_order])
                rows = [request.rows for request in batch.requests]
                split = {name: split_rows(array, rows) for name, (array, _) in outputs.items()}
                return [
                    {
                        name: OutputArray(split[name][i], outputs[name][1])
                        for name in request.requested_outputs
                    }
                    for i, request in enumerate(batch.requests)
                ]
        return run_each(batch.requests, self._run_one, "PyTorch execute failure")

    def _run_one(self, request: Request) -> RequestOutputs:
        missing = [name for name in self.input_order if name not in request.inputs]
        if missing:
            raise BackendError(f"input '{missing[0]}' is required by forward()")
        outputs = self._forward([request.inputs[name].to_numpy() for name in self.input_order], request)
        return {name: OutputArray(array, datatype) for name, (array, datatype) in outputs.items()}

    def _forward(
        self, arrays: list[NDArray | None], request: Request | None = None
    ) -> dict[str, tuple[NDArray, str | None]]:
        torch = self.torch
        tensors = [self._to_torch(array, name) for array, name in zip(arrays, self.input_order, strict=True)]
        with torch.inference_mode():
            result = self.model(*tensors)
        if isinstance(result, torch.Tensor):
            result = (result,)
        if not isinstance(result, list | tuple):
            raise BackendError(
                f"forward() returned {type(result).__name__}; expected a tensor or a tuple of them"
            )
        outputs: dict[str, tuple[NDArray, str | None]] = {}
        for name, position in zip(self.output_names(), self.output_positions, strict=True):
            if request is not None and name not in request.requested_outputs:
                continue
            if position >= len(result):
                raise BackendError(
                    f"output '{name}' wants result {position}, but forward() returned {len(result)}"
                )
            outputs[name] = self._to_numpy(result[position])
        return outputs

    def _to_torch(self, array: NDArray | None, name: str) -> Any:
        torch = self.torch
        if array is None:
            raise BackendError(f"input '{name}' is missing")
        if array.dtype == np.object_:
            raise BackendError(f"input '{name}': BYTES tensors are not supported by the pytorch backend")
        if self.config_datatype(name) == "BF16":
            tensor = torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
        else:
            tensor = torch.from_numpy(array)
        return tensor.to(self.device)

    def _to_numpy(self, tensor: Any) -> tuple[NDArray, str | None]:
        torch = self.torch
        tensor = tensor.detach().cpu().contiguous()
        if tensor.dtype == torch.bfloat16:
            return tensor.view(torch.int16).numpy().view(np.uint16), "BF16"
        array: NDArray = tensor.numpy()
        return array, None


def _positive(value: str | None) -> int:
    try:
        number = int(value or "1")
    except ValueError:
        raise LoadError(f"thread count must be a whole number, not {value!r}") from None
    return max(1, number)
