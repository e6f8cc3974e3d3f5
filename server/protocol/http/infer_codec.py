"""HTTP inference bodies <-> InferenceRequest / InferenceResult (KServe v2 + binary tensor extension).

A request body is a JSON header, optionally followed by the inputs' binary data in the order the
header lists them (`Inference-Header-Content-Length` says where the JSON ends). Binary inputs
become memoryview slices of the body: no copy here. Outputs go back as JSON `data`, or as binary
parts after the JSON header when the client asks (`binary_data`, `binary_data_output`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import orjson

from server.errors import InvalidInput
from server.protocol.shm_tensors import (
    DISABLED,
    OutputTargets,
    add_output_target,
    names_shared_memory,
    region_input,
)
from server.protocol.tensor_codec import bytes_to_json, check_datatype, json_to_bytes
from server.vocabulary.shm_regions import RegionTable
from server.vocabulary.types import InferenceRequest, InferenceResult, RequestedOutput, Tensor

BINARY_DATA_SIZE = "binary_data_size"


@dataclass(slots=True)
class DecodedInfer:
    request: InferenceRequest
    binary_output_default: bool  # the request-level `binary_data_output` parameter
    # Outputs that asked for classification: name -> top-k count.
    classification: dict[str, int]
    # Outputs the client asked to receive in a shared-memory region (protocol/shm_tensors.py).
    shm_outputs: OutputTargets = field(default_factory=dict)


def _header_length(value: str | None, body_size: int) -> int | None:
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise InvalidInput(f"Inference-Header-Content-Length must be an integer, got '{value}'") from None
    if length < 0 or length > body_size:
        raise InvalidInput(f"inference header size should be in range (0, {body_size}), got: {length}")
    return length


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"Unable to parse '{what}': expected a JSON object")
    return value


def _shape(raw: Any, name: str) -> list[int]:
    if not isinstance(raw, list) or not all(isinstance(d, int) and d >= 0 for d in raw):
        raise InvalidInput(
            f"Unable to parse 'shape' of input '{name}': expected a list of non-negative integers"
        )
    return raw


def decode_infer_request(
    model: str,
    version: str,
    body: bytes | bytearray,
    header_length_value: str | None,
    regions: RegionTable = DISABLED,
) -> DecodedInfer:
    """Parse an infer body; binary input data stays a view into `body`; inputs in shared memory
    are read from `regions`, and outputs asked into it get their targets there."""
    view = memoryview(body)
    header_length = _header_length(header_length_value, len(body))
    header_view = view if header_length is None else view[:header_length]
    try:
        header = orjson.loads(header_view)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"failed to parse the request JSON buffer: {exc}") from None
    if not isinstance(header, dict):
        raise InvalidInput("failed to parse the request JSON buffer: expected a JSON object")

    offset = len(header_view)
    inputs: list[Tensor] = []
    seen: set[str] = set()
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list):
        raise InvalidInput("Unable to parse 'inputs': expected a JSON array")
    for raw in raw_inputs:
        tensor, offset = _decode_input(_object(raw, "inputs"), view, offset, model, regions)
        if tensor.name in seen:
            raise InvalidInput(f"input '{tensor.name}' already exists in request")
        seen.add(tensor.name)
        inputs.append(tensor)
    if offset != len(body):
        raise InvalidInput(f"unexpected additional input data for model '{model}'")

    parameters = dict(_object(header.get("parameters"), "parameters"))
    binary_default = bool(parameters.pop("binary_data_output", False))
    shm_outputs: OutputTargets = {}
    outputs, classification = _decode_outputs(header.get("outputs"), regions, shm_outputs)
    request_id = header.get("id", "")
    request = InferenceRequest(
        model=model,
        version=version,
        inputs=inputs,
        outputs=outputs,
        id=request_id if isinstance(request_id, str) else str(request_id),
        parameters=parameters,
    )
    return DecodedInfer(request, binary_default, classification, shm_outputs)


def _decode_input(
    raw: dict[str, Any], body: memoryview, offset: int, model: str, regions: RegionTable
) -> tuple[Tensor, int]:
    name = raw.get("name")
    if not isinstance(name, str):
        raise InvalidInput("Unable to parse 'name': every input needs a string 'name'")
    datatype = raw.get("datatype")
    if not isinstance(datatype, str):
        raise InvalidInput(f"Unable to parse 'datatype' of input '{name}'")
    check_datatype(datatype, name)
    shape = _shape(raw.get("shape"), name)
    parameters = dict(_object(raw.get("parameters"), "parameters"))
    binary_size = parameters.pop(BINARY_DATA_SIZE, None)
    has_data = "data" in raw
    if parameters and names_shared_memory(parameters):
        if has_data or binary_size is not None:
            other = "'data'" if has_data else "'binary_data_size'"
            raise InvalidInput(
                "Input must set only one of the following fields: 'data', 'binary_data_size' in "
                f"'parameters', 'shared_memory_region' in 'parameters'. But set {other} "
                "'shared_memory_region'"
            )
        shm_data, source = region_input(regions, parameters, name, datatype)
        return Tensor(name, datatype, shape, shm_data, parameters, source), offset
    if (binary_size is not None) == has_data:
        state = "both 'data' and 'binary_data_size' are set" if has_data else "no field is set"
        raise InvalidInput(
            "Input must set only one of the following fields: 'data', 'binary_data_size' in "
            f"'parameters', 'shared_memory_region' in 'parameters'. But {state}"
        )
    if has_data:
        data: bytes | memoryview = json_to_bytes(datatype, shape, raw["data"], name)
    else:
        if not isinstance(binary_size, int) or binary_size < 0:
            raise InvalidInput(f"'binary_data_size' of input '{name}' must be a non-negative integer")
        end = offset + binary_size
        if end > len(body):
            raise InvalidInput(
                f"unexpected size for input '{name}', expecting {end - len(body)} additional bytes "
                f"for model '{model}'"
            )
        data = body[offset:end]
        offset = end
    return Tensor(name=name, datatype=datatype, shape=shape, data=data, parameters=parameters), offset


def _decode_outputs(
    raw_outputs: Any, regions: RegionTable, shm_outputs: OutputTargets
) -> tuple[list[RequestedOutput], dict[str, int]]:
    if raw_outputs is None:
        return [], {}
    if not isinstance(raw_outputs, list):
        raise InvalidInput("Unable to parse 'outputs': expected a JSON array")
    outputs: list[RequestedOutput] = []
    classification: dict[str, int] = {}
    seen: set[str] = set()
    for raw in raw_outputs:
        item = _object(raw, "outputs")
        name = item.get("name")
        if not isinstance(name, str):
            raise InvalidInput("Unable to parse 'name': every requested output needs a string 'name'")
        parameters = dict(_object(item.get("parameters"), "parameters"))
        if parameters and names_shared_memory(parameters):
            add_output_target(regions, shm_outputs, parameters, name)
        count = parameters.get("classification")
        if count is not None:
            if not isinstance(count, int) or count <= 0:
                raise InvalidInput(f"'classification' of output '{name}' must be a positive integer")
            classification[name] = count
        if name in seen:  # Triton answers a repeated output once
            continue
        seen.add(name)
        outputs.append(RequestedOutput(name=name, parameters=parameters))
    return outputs, classification


@dataclass(slots=True)
class EncodedInfer:
    header: bytes  # the JSON part
    binary_parts: list[bytes | bytearray | memoryview]  # appended after the header, in output order


def encode_infer_result(
    result: InferenceResult,
    requested: list[RequestedOutput],
    binary_default: bool,
    in_shared_memory: Collection[str] = (),
) -> EncodedInfer:
    """The response JSON (and binary parts) for `result`, honouring each output's `binary_data`;
    outputs written into shared memory (`in_shared_memory`) get their name, datatype and shape only."""
    binary_by_name: dict[str, bool] = {}
    for output in requested:
        flag = output.parameters.get("binary_data")
        if flag is not None:
            binary_by_name[output.name] = bool(flag)
    outputs_json: list[dict[str, Any]] = []
    parts: list[bytes | bytearray | memoryview] = []
    for tensor in result.outputs:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
        if tensor.parameters:
            entry["parameters"] = dict(tensor.parameters)
        if in_shared_memory and tensor.name in in_shared_memory:
            outputs_json.append(entry)
            continue
        if binary_by_name.get(tensor.name, binary_default):
            size = len(tensor.data) if not isinstance(tensor.data, memoryview) else tensor.data.nbytes
            entry.setdefault("parameters", {})[BINARY_DATA_SIZE] = size
            parts.append(tensor.data)
        else:
            entry["data"] = bytes_to_json(tensor.datatype, tensor.data, tensor.name)
        outputs_json.append(entry)
    body: dict[str, Any] = {}
    if result.id:
        body["id"] = result.id
    body["model_name"] = result.model
    body["model_version"] = result.version
    if result.parameters:
        body["parameters"] = result.parameters
    body["outputs"] = outputs_json
    return EncodedInfer(orjson.dumps(body), parts)
