"""Tensor data between the wire forms both front ends accept and the raw bytes of `Tensor.data`.

Raw (binary) tensors are passed through untouched; only the JSON form (HTTP) and the typed
`contents` form (gRPC) are converted here, into the same little-endian bytes a binary client
would have sent. BYTES elements use Triton's 4-byte length prefix. Error texts follow Triton 2.51.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2

from server.errors import InvalidInput
from server.vocabulary.dtypes import (
    ELEMENT_SIZE,
    WIRE_TO_NUMPY,
    deserialize_bytes,
    element_count,
    serialize_bytes,
)
from server.vocabulary.types import InferenceResult

# gRPC InferTensorContents field that carries each wire type (FP16/BF16 have none: raw only).
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

_NO_JSON_TYPES = ("FP16", "BF16")


def check_datatype(datatype: str, input_name: str) -> None:
    if datatype not in WIRE_TO_NUMPY:
        raise InvalidInput(f"invalid datatype for input {input_name}")


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if not data or not isinstance(data[0], list):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def json_to_bytes(datatype: str, shape: list[int], data: Any, input_name: str) -> bytes:
    """The JSON `data` of an HTTP input (flat or nested list) -> raw tensor bytes."""
    check_datatype(datatype, input_name)
    if datatype in _NO_JSON_TYPES:
        raise InvalidInput(
            f"receiving {datatype} data via JSON is not supported. "
            f"Please use the binary data format for input {input_name}"
        )
    flat = _flatten(data)
    if len(flat) != element_count(shape):
        raise InvalidInput(
            f"Unable to parse 'data' of input '{input_name}': shape {list(shape)} needs "
            f"{element_count(shape)} elements, but 'data' holds {len(flat)}"
        )
    if datatype == "BYTES":
        if not all(isinstance(item, str) for item in flat):
            raise InvalidInput(
                f"Unable to parse 'data' of input '{input_name}': BYTES elements must be JSON strings"
            )
        return serialize_bytes(flat)
    try:
        array = np.array(flat, dtype=WIRE_TO_NUMPY[datatype])
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(f"Unable to parse 'data' of input '{input_name}' as {datatype}: {exc}") from None
    return array.tobytes()


def bytes_to_json(datatype: str, data: bytes | bytearray | memoryview, output_name: str) -> list[Any]:
    """Raw output bytes -> the flat JSON list Triton returns (BYTES as UTF-8 strings)."""
    if datatype in _NO_JSON_TYPES:
        raise InvalidInput(
            f"sending {datatype} data via JSON is not supported. "
            f"Please use the binary data format for output {output_name}"
        )
    if datatype == "BYTES":
        return [item.decode("utf-8", "replace") for item in deserialize_bytes(memoryview(data))]
    values: list[Any] = np.frombuffer(data, dtype=WIRE_TO_NUMPY[datatype]).tolist()
    return values


def contents_to_bytes(
    datatype: str, contents: service_pb2.InferTensorContents, input_name: str, model: str
) -> bytes | None:
    """gRPC typed `contents` -> raw bytes; None when no contents field is set."""
    check_datatype(datatype, input_name)
    present = contents.ListFields()
    if not present:
        return None
    field_name = CONTENTS_FIELD.get(datatype)
    if len(present) > 1 or present[0][0].name != field_name:
        raise InvalidInput(
            f"unexpected explicit tensor data for input tensor '{input_name}' for model '{model}' "
            f"of type '{_contents_type(present[0][0].name)}', expected datatype '{datatype}'"
        )
    values = present[0][1]
    if datatype == "BYTES":
        return serialize_bytes(list(values))
    try:
        return np.array(values, dtype=WIRE_TO_NUMPY[datatype]).tobytes()
    except OverflowError as exc:
        raise InvalidInput(f"contents of input '{input_name}' do not fit {datatype}: {exc}") from None


def _contents_type(field_name: str) -> str:
    """The wire type Triton names for a contents field (its first user in CONTENTS_FIELD order)."""
    reverse = {"int_contents": "INT32", "uint_contents": "UINT32"}
    if field_name in reverse:
        return reverse[field_name]
    return next((dt for dt, name in CONTENTS_FIELD.items() if name == field_name), field_name)


def classify(
    datatype: str,
    shape: list[int],
    data: bytes | bytearray | memoryview,
    count: int,
    batched: bool,
    *,
    labels: Sequence[str] = (),
) -> tuple[list[int], bytes]:
    """Triton's classification extension: top-`count` "value:index" strings per batch row, and
    "value:index:label" where the output's `label_filename` names class `index` (`labels`).

    Returns the new shape ([batch, count] for batched models, else [count]) and BYTES data.
    """
    if datatype not in ELEMENT_SIZE or datatype in _NO_JSON_TYPES:
        raise InvalidInput(f"classification is not supported for {datatype} outputs")
    values = np.frombuffer(data, dtype=WIRE_TO_NUMPY[datatype])
    rows = shape[0] if batched and shape else 1
    matrix = values.reshape(rows, -1) if values.size else values.reshape(rows, 0)
    take = min(count, matrix.shape[1])
    texts: list[bytes | str] = []
    for row in matrix:
        # Stable sort on the negated values keeps the lower index first among equal values.
        order = np.argsort(-row.astype(np.float64), kind="stable")[:take]
        texts.extend(
            f"{float(row[index]):f}:{index}:{labels[index]}"
            if index < len(labels)
            else f"{float(row[index]):f}:{index}"
            for index in order
        )
    new_shape = [rows, take] if batched else [take]
    return new_shape, serialize_bytes(texts)


def classify_outputs(
    result: InferenceResult,
    classification: dict[str, int],
    batched: bool,
    labels: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """Replace each output that asked for classification (name -> top count) by its classes,
    labelled from `labels` (output name -> its label file's lines) where the config names one."""
    for tensor in result.outputs:
        count = classification.get(tensor.name)
        if count is not None:
            tensor.shape, tensor.data = classify(
                tensor.datatype,
                tensor.shape,
                tensor.data,
                count,
                batched,
                labels=(labels or {}).get(tensor.name, ()),
            )
            tensor.datatype = "BYTES"
