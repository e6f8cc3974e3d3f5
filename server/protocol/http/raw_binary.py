"""Triton's raw binary request (binary tensor data extension): `Inference-Header-Content-Length: 0`
and the whole body is the bytes of the model's only input.

The input's name, datatype and shape come from the model config: its dims (a batching model gets
a batch of 1 in front); one variable dimension (-1) is deduced from the body's size; a BYTES input
is one element holding the whole body. Every output comes back in binary, as Triton answers a raw
request. Models with more than one input cannot take one.
"""

from __future__ import annotations

from tritonclient.grpc import model_config_pb2

from server.errors import InvalidInput
from server.protocol.http.infer_codec import DecodedInfer
from server.vocabulary.dtypes import ELEMENT_SIZE, config_to_wire, serialize_bytes
from server.vocabulary.types import InferenceRequest, Tensor


def _shape(dims: list[int], datatype: str, size: int, model: str, name: str) -> list[int]:
    if datatype == "BYTES":
        return [1] * len(dims) if dims else [1]
    element = ELEMENT_SIZE[datatype]
    variable = [index for index, dim in enumerate(dims) if dim < 0]
    if len(variable) > 1:
        raise InvalidInput(
            f"raw binary request for model '{model}': input '{name}' has {len(variable)} variable "
            "dimensions; its shape cannot be deduced from the body (send the JSON header)"
        )
    if variable:
        known = element
        for dim in dims:
            known *= dim if dim >= 0 else 1
        if known == 0 or size % known:
            raise InvalidInput(
                f"raw binary request for model '{model}': {size} bytes do not make whole elements of "
                f"input '{name}' ({datatype}, dims {dims})"
            )
        dims = list(dims)
        dims[variable[0]] = size // known
    return dims


def decode_raw_request(
    model: str, version: str, body: bytes | bytearray, config: model_config_pb2.ModelConfig
) -> DecodedInfer:
    """The request a raw binary body makes for the model of `config`."""
    if len(config.input) != 1:
        raise InvalidInput(
            f"raw binary request (Inference-Header-Content-Length: 0) needs a model with exactly one "
            f"input; '{model}' has {len(config.input)}"
        )
    spec = config.input[0]
    datatype = config_to_wire(model_config_pb2.DataType.Name(spec.data_type))
    dims = [int(dim) for dim in spec.dims]
    shape = _shape(dims, datatype, len(body), model, spec.name)
    if config.max_batch_size > 0:
        shape = [1, *shape]
    data: bytes | bytearray | memoryview = (
        serialize_bytes([bytes(body)]) if datatype == "BYTES" else memoryview(body)
    )
    tensor = Tensor(spec.name, datatype, shape, data)
    request = InferenceRequest(model=model, version=version, inputs=[tensor])
    return DecodedInfer(request, binary_output_default=True, classification={})
