"""Request validation against a model version's config, with Triton's error texts.

Built once per loaded model version (`RequestValidator(name, config)`) and called for every
request on the hot path, so everything that depends only on the config is precomputed.
Checks run in Triton's order (core `InferenceRequest::Normalize` and its input validation):
requested outputs, input count, input names, batch dimension, batch size, data type, shape,
byte size; the messages carry Triton's `[request id: ...]` prefix.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tritonclient.grpc import model_config_pb2

from server.errors import InvalidInput
from server.vocabulary.dtypes import ELEMENT_SIZE, config_to_wire
from server.vocabulary.types import InferenceRequest, Tensor

_LENGTH_PREFIX = struct.Struct("<I")
WILDCARD = -1
# Triton appends this to shape errors of batching models (and a bare ". " otherwise).
_BATCH_NOTE = (
    "NOTE: Setting a non-zero max_batch_size in the model config requires a batch dimension to be "
    "prepended to each input shape. If you want to specify the full shape including the batch dim "
    "in your input dims config, try setting max_batch_size to zero. See the model configuration "
    "docs for more info on max_batch_size."
)


@dataclass(frozen=True, slots=True)
class InputSpec:
    """What the config says about one input, in wire terms."""

    name: str
    datatype: str  # wire name: FP32, BYTES...
    dims: tuple[int, ...]  # without the batch dimension
    element_size: int | None  # None for BYTES
    optional: bool
    is_shape_tensor: bool


def dims_to_string(dims: list[int] | tuple[int, ...]) -> str:
    """Triton's DimsListToString: `[-1,16]`."""
    return "[" + ",".join(str(dim) for dim in dims) + "]"


def request_prefix(request: InferenceRequest) -> str:
    return f"[request id: {request.id or '<id_unknown>'}] "


def count_bytes_elements(data: bytes | bytearray | memoryview) -> int | None:
    """Number of elements in a serialized BYTES tensor, or None when a length runs past the end."""
    end = len(data)
    offset = count = 0
    unpack = _LENGTH_PREFIX.unpack_from
    while offset < end:
        if offset + 4 > end:
            return None
        offset += 4 + unpack(data, offset)[0]
        count += 1
    return count if offset == end else None


class RequestValidator:
    """Checks an InferenceRequest against one model version's config; raises InvalidInput."""

    def __init__(self, model_name: str, config: model_config_pb2.ModelConfig) -> None:
        self.model_name = model_name
        self.max_batch_size = int(config.max_batch_size)
        self.inputs: dict[str, InputSpec] = {}
        for item in config.input:
            datatype = config_to_wire(model_config_pb2.DataType.Name(item.data_type))
            self.inputs[item.name] = InputSpec(
                name=item.name,
                datatype=datatype,
                dims=tuple(int(dim) for dim in item.dims),
                element_size=ELEMENT_SIZE.get(datatype),
                optional=bool(item.optional),
                is_shape_tensor=bool(item.is_shape_tensor),
            )
        self.output_names = frozenset(output.name for output in config.output)
        self.required_names = tuple(name for name, spec in self.inputs.items() if not spec.optional)
        self.required_count = len(self.required_names)

    def validate(self, request: InferenceRequest) -> None:
        """Raise InvalidInput with Triton's wording for the first problem found."""
        model = self.model_name
        for output in request.outputs:
            if output.name not in self.output_names:
                raise InvalidInput(f"unexpected inference output '{output.name}' for model '{model}'")
        self._check_input_names(request)
        batch_size = self._batch_size(request)
        if batch_size > self.max_batch_size or batch_size < 0:  # Triton reads -1 as a huge unsigned size
            raise InvalidInput(
                f"{request_prefix(request)}inference request batch-size must be <= "
                f"{self.max_batch_size} for '{model}'"
            )
        batched = self.max_batch_size > 0
        for tensor in request.inputs:
            spec = self.inputs[tensor.name]
            if tensor.datatype != spec.datatype:
                raise InvalidInput(
                    f"{request_prefix(request)}inference input '{tensor.name}' data-type is "
                    f"'{tensor.datatype}', but model '{model}' expects '{spec.datatype}'"
                )
            shape = tensor.shape[1:] if batched and not spec.is_shape_tensor else tensor.shape
            self._check_shape(request, tensor, spec, shape)
            self._check_byte_size(request, tensor, spec)

    def _check_input_names(self, request: InferenceRequest) -> None:
        model = self.model_name
        given = len(request.inputs)
        if given > len(self.inputs) or given < self.required_count:
            names = {tensor.name for tensor in request.inputs}
            missing = [name for name, spec in self.inputs.items() if not spec.optional and name not in names]
            if len(self.inputs) == self.required_count:
                message = f"expected {len(self.inputs)} inputs but got {given} inputs for model '{model}'"
            else:
                message = (
                    f"expected number of inputs between {self.required_count} and {len(self.inputs)} "
                    f"but got {given} inputs for model '{model}'"
                )
            if missing:
                got = ",".join(f"'{tensor.name}'" for tensor in request.inputs)
                wanted = ",".join(f"'{name}'" for name in missing)
                message += (
                    f". Got input(s) [{got}], but missing required input(s) [{wanted}]. "
                    "Please provide all required input(s)."
                )
            raise InvalidInput(request_prefix(request) + message)
        seen: set[str] = set()
        for tensor in request.inputs:
            if tensor.name not in self.inputs:
                raise InvalidInput(f"unexpected inference input '{tensor.name}' for model '{model}'")
            if tensor.name in seen:
                raise InvalidInput(
                    f"{request_prefix(request)}input '{tensor.name}' is given more than once "
                    f"for model '{model}'"
                )
            seen.add(tensor.name)
        missing = [name for name in self.required_names if name not in seen]
        if missing:
            raise InvalidInput(
                f"{request_prefix(request)}missing required input(s) "
                f"[{', '.join(repr(name) for name in missing)}] for model '{model}'"
            )

    def _batch_size(self, request: InferenceRequest) -> int:
        """The request's batch size (0 for models without batching), checked across inputs."""
        if self.max_batch_size <= 0:
            return 0
        batch_size = 0
        for tensor in request.inputs:
            if self.inputs[tensor.name].is_shape_tensor:
                continue
            if not tensor.shape:
                raise InvalidInput(
                    f"{request_prefix(request)}input '{tensor.name}' has no shape but model requires "
                    f"batch dimension for '{self.model_name}'"
                )
            if batch_size == 0:
                batch_size = tensor.shape[0]
            elif tensor.shape[0] != batch_size:
                raise InvalidInput(
                    f"{request_prefix(request)}input '{tensor.name}' batch size does not match other "
                    f"inputs for '{self.model_name}'"
                )
        return batch_size

    def _check_shape(
        self, request: InferenceRequest, tensor: Tensor, spec: InputSpec, shape: list[int]
    ) -> None:
        dims = spec.dims
        matches = len(dims) == len(shape)
        if matches:
            for expected, got in zip(dims, shape, strict=True):
                if got < 0:
                    raise InvalidInput(
                        f"{request_prefix(request)}All input dimensions should be specified for input "
                        f"'{tensor.name}' for model '{self.model_name}', got {dims_to_string(tensor.shape)}"
                    )
                if expected not in (WILDCARD, got):
                    matches = False
                    break
        if not matches:
            batched = self.max_batch_size > 0 and not spec.is_shape_tensor
            full = (WILDCARD, *dims) if batched else dims
            raise InvalidInput(
                f"{request_prefix(request)}unexpected shape for input '{tensor.name}' for model "
                f"'{self.model_name}'. Expected {dims_to_string(full)}, got {dims_to_string(tensor.shape)}. "
                + (_BATCH_NOTE if batched else "")
            )

    def _check_byte_size(self, request: InferenceRequest, tensor: Tensor, spec: InputSpec) -> None:
        elements = 1
        for dim in tensor.shape:
            elements *= dim
        if spec.element_size is not None:
            expected = elements * spec.element_size
            got = len(tensor.data)
            if got != expected:
                raise InvalidInput(
                    f"{request_prefix(request)}input byte size mismatch for input '{tensor.name}' for "
                    f"model '{self.model_name}'. Expected {expected}, got {got}"
                )
            return
        count = count_bytes_elements(tensor.data)
        if count is None:
            raise InvalidInput(
                f"{request_prefix(request)}element byte size indicator exceeds the end of the buffer "
                f"for inference input '{tensor.name}' for model '{self.model_name}'"
            )
        if count < elements:
            raise InvalidInput(
                f"{request_prefix(request)}expected {elements} string elements for inference input "
                f"'{tensor.name}' for model '{self.model_name}', got {count}"
            )
        if count > elements:
            raise InvalidInput(
                f"{request_prefix(request)}unexpected number of string elements {count} for inference "
                f"input '{tensor.name}' for model '{self.model_name}', expecting {elements}"
            )
