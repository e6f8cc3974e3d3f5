"""The onnxruntime backend (`onnxruntime_onnx`, model.onnx).

CPU execution provider by default; on a GPU instance the CUDA provider (and TensorRT when the
config asks for it in `optimization.execution_accelerators`) if onnxruntime-gpu offers them.
Thread counts come from the model's `parameters` or the server-level backend config, with Triton's
keys `intra_op_thread_count` / `inter_op_thread_count`; the default intra-op count is 1 because
instances (one process each) already share the machine's cores.
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
from server.errors import LoadError, ServerError

DEFAULT_INTRA_OP_THREADS = "1"
# One Identity node, float[1] in and out, opset 13: what onnx.helper.make_model serializes for it.
_WARM_UP_MODEL = (
    b'\x08\x08\x12\ttritonctl:=\n\x10\n\x01x\x12\x01y"\x08Identity\x12\x07warm_upZ\x0f\n\x01x\x12\n\n'
    b"\x08\x08\x01\x12\x04\n\x02\x08\x01b\x0f\n\x01y\x12\n\n\x08\x08\x01\x12\x04\n\x02\x08\x01B\x04\n\x00\x10\r"
)


def warm_up() -> None:
    """Create and run one session of a one-node model. What onnxruntime sets up once per process
    (~10 MiB measured: its environment, allocators, kernel registries) is then paid when a shared
    host starts, not charged to the first model it loads, which a memory budget would otherwise
    count ~20 times too large for as long as it is known."""
    import onnxruntime as ort

    session = ort.InferenceSession(_WARM_UP_MODEL, providers=["CPUExecutionProvider"])
    session.run(None, {"x": np.ones(1, np.float32)})


class OnnxRuntimeBackend(Backend):
    def load(self) -> None:
        import onnxruntime as ort

        path = self.context.model_file("model.onnx")
        if path.is_dir():  # Triton also accepts a folder holding model.onnx (external weights)
            path = path / "model.onnx"
        if not path.is_file():
            raise LoadError(f"ONNX model file '{path}' does not exist")
        options = ort.SessionOptions()
        options.intra_op_num_threads = _thread_count(
            self.context.parameter("intra_op_thread_count", DEFAULT_INTRA_OP_THREADS)
        )
        options.inter_op_num_threads = _thread_count(self.context.parameter("inter_op_thread_count", "0"))
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=self._providers(ort))
        model_inputs = {meta.name for meta in self.session.get_inputs()}
        model_outputs = [meta.name for meta in self.session.get_outputs()]
        for name in self.input_names():
            if name not in model_inputs:
                raise LoadError(
                    f"model '{self.context.model_name}': config.pbtxt names input '{name}', but the ONNX "
                    f"model's inputs are {sorted(model_inputs)}"
                )
        for name in self.output_names():
            if name not in model_outputs:
                raise LoadError(
                    f"model '{self.context.model_name}': config.pbtxt names output '{name}', but the ONNX "
                    f"model's outputs are {model_outputs}"
                )
        self.max_batch_size = int(self.context.config.max_batch_size)

    def _providers(self, ort: Any) -> list[Any]:
        if not self.context.uses_gpu:
            return ["CPUExecutionProvider"]
        available = ort.get_available_providers()
        if "CUDAExecutionProvider" not in available:
            raise LoadError(
                f"instance '{self.context.instance_name}' is KIND_GPU, but this onnxruntime has no CUDA "
                "provider; install onnxruntime-gpu or use KIND_CPU"
            )
        providers: list[Any] = []
        accelerators = self.context.config.optimization.execution_accelerators.gpu_execution_accelerator
        if any(a.name == "tensorrt" for a in accelerators) and "TensorrtExecutionProvider" in available:
            providers.append(("TensorrtExecutionProvider", {"device_id": 0}))
        providers.append(("CUDAExecutionProvider", {"device_id": 0}))  # CUDA_VISIBLE_DEVICES = this GPU
        providers.append("CPUExecutionProvider")
        return providers

    def execute(self, batch: Batch) -> list[RequestOutputs | ServerError]:
        if self.max_batch_size > 0 and len(batch.requests) > 1:
            feeds = {name: tensor.stacked() for name, tensor in batch.inputs.items()}
            if len(feeds) == len(batch.requests[0].inputs) and all(a is not None for a in feeds.values()):
                return self._run_batched(batch, {k: _feedable(v) for k, v in feeds.items() if v is not None})
        return run_each(batch.requests, self._run_one, "onnxruntime failed")

    def _run_batched(self, batch: Batch, feeds: dict[str, NDArray]) -> list[RequestOutputs | ServerError]:
        wanted = _union(request.requested_outputs for request in batch.requests)
        arrays = self.session.run(wanted, feeds)
        rows = [request.rows for request in batch.requests]
        per_output = {name: split_rows(array, rows) for name, array in zip(wanted, arrays, strict=True)}
        return [
            {name: OutputArray(per_output[name][index]) for name in request.requested_outputs}
            for index, request in enumerate(batch.requests)
        ]

    def _run_one(self, request: Request) -> RequestOutputs:
        feeds = {name: _feedable(tensor.to_numpy()) for name, tensor in request.inputs.items()}
        arrays = self.session.run(request.requested_outputs, feeds)
        return {
            name: OutputArray(array) for name, array in zip(request.requested_outputs, arrays, strict=True)
        }


def _feedable(array: NDArray) -> NDArray:
    """onnxruntime takes string tensors as str objects, not bytes."""
    if array.dtype == np.object_:
        decoded = [item.decode("utf-8") if isinstance(item, bytes) else item for item in array.ravel()]
        return np.array(decoded, dtype=np.object_).reshape(array.shape)
    return array


def _union(groups: Any) -> list[str]:
    names: list[str] = []
    for group in groups:
        names.extend(name for name in group if name not in names)
    return names


def _thread_count(value: str | None) -> int:
    try:
        return max(0, int(value or "0"))
    except ValueError:
        raise LoadError(f"thread count must be a whole number, not {value!r}") from None
