"""The tensorrt backend (`tensorrt_plan`, model.plan).

Import-guarded: without the `tensorrt` package, or without a GPU for the instance, the model fails
to load with a message that says exactly which is missing; nothing else in the server is affected.
Device buffers are torch CUDA tensors (TensorRT 10 name-based I/O, `execute_async_v3`).
"""

from __future__ import annotations

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
from server.errors import BackendError, LoadError, ServerError


class TensorRTBackend(Backend):
    def load(self) -> None:
        model = f"TensorRT model '{self.context.model_name}'"
        try:
            import tensorrt as trt
        except ImportError:
            raise LoadError(
                f"cannot load {model}: the 'tensorrt' Python package is not installed "
                "(it needs an NVIDIA GPU with its driver; `pip install tensorrt`)"
            ) from None
        if not self.context.uses_gpu:
            raise LoadError(
                f"cannot load {model}: TensorRT engines run only on a GPU, and instance "
                f"'{self.context.instance_name}' is {self.context.instance_kind} "
                "(no GPU visible, or --gpus none)"
            )
        try:
            import torch
        except ImportError:
            raise LoadError(
                f"cannot load {model}: tritonctl's tensorrt backend needs torch for CUDA buffers"
            ) from None
        if not torch.cuda.is_available():
            raise LoadError(
                f"cannot load {model}: no CUDA device is visible to instance '{self.context.instance_name}'"
            )
        path = self.context.model_file("model.plan")
        if not path.is_file():
            raise LoadError(f"TensorRT plan file '{path}' does not exist")
        self.torch = torch
        self.trt = trt
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise LoadError(
                f"cannot load {model}: TensorRT could not deserialize '{path}' "
                "(built for another TensorRT version or GPU?)"
            )
        self.execution = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.engine_inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.engine_outputs = [n for n in names if n not in self.engine_inputs]
        for name in self.input_names():
            if name not in self.engine_inputs:
                raise LoadError(
                    f"{model}: config input '{name}' is not an engine input ({self.engine_inputs})"
                )
        self.max_batch_size = int(self.context.config.max_batch_size)

    def execute(self, batch: Batch) -> list[RequestOutputs | ServerError]:
        if self.max_batch_size > 0 and len(batch.requests) > 1:
            stacked = {name: tensor.stacked() for name, tensor in batch.inputs.items()}
            if all(stacked.get(name) is not None for name in self.engine_inputs):
                arrays = self._run({name: a for name, a in stacked.items() if a is not None})
                rows = [request.rows for request in batch.requests]
                split = {name: split_rows(array, rows) for name, array in arrays.items()}
                return [
                    {name: OutputArray(split[name][i]) for name in request.requested_outputs}
                    for i, request in enumerate(batch.requests)
                ]
        return run_each(batch.requests, self._run_one, "TensorRT execute failure")

    def _run_one(self, request: Request) -> RequestOutputs:
        arrays = self._run({name: tensor.to_numpy() for name, tensor in request.inputs.items()})
        return {name: OutputArray(arrays[name]) for name in request.requested_outputs}

    def _run(self, feeds: dict[str, NDArray]) -> dict[str, NDArray]:
        torch, trt = self.torch, self.trt
        keep: list[Any] = []
        for name in self.engine_inputs:
            if name not in feeds:
                raise BackendError(f"input '{name}' is required by the engine")
            device_tensor = torch.from_numpy(np.ascontiguousarray(feeds[name])).cuda()
            keep.append(device_tensor)
            self.execution.set_input_shape(name, tuple(device_tensor.shape))
            self.execution.set_tensor_address(name, device_tensor.data_ptr())
        outputs: dict[str, Any] = {}
        for name in self.engine_outputs:
            shape = tuple(self.execution.get_tensor_shape(name))
            dtype = torch.from_numpy(np.empty(0, dtype=trt.nptype(self.engine.get_tensor_dtype(name)))).dtype
            outputs[name] = torch.empty(shape, dtype=dtype, device="cuda")
            self.execution.set_tensor_address(name, outputs[name].data_ptr())
        stream = torch.cuda.current_stream()
        if not self.execution.execute_async_v3(stream.cuda_stream):
            raise BackendError("TensorRT execute_async_v3 reported a failure")
        stream.synchronize()
        return {name: tensor.cpu().numpy() for name, tensor in outputs.items()}
