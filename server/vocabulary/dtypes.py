"""Triton data types: names, numpy equivalents, byte sizes and the BYTES wire format.

Triton names a tensor type twice: `TYPE_FP32` in config.pbtxt (model_config.DataType) and `FP32`
on the wire (KServe v2). BYTES tensors travel as a concatenation of elements, each a 4-byte
little-endian length followed by the bytes; that format is self-delimiting, so batches of BYTES
tensors concatenate without re-encoding.
"""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt

from server.errors import InvalidInput

# Wire name -> numpy dtype. BF16 has no numpy type: it is carried as raw 2-byte words (uint16).
WIRE_TO_NUMPY: dict[str, np.dtype[np.generic]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BF16": np.dtype(np.uint16),
    "BYTES": np.dtype(np.object_),
}

ELEMENT_SIZE: dict[str, int] = {k: v.itemsize for k, v in WIRE_TO_NUMPY.items() if k != "BYTES"}


def config_to_wire(config_type: str) -> str:
    """`TYPE_FP32` -> `FP32`; `TYPE_STRING` -> `BYTES`."""
    name = config_type.removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


def wire_to_config(wire_type: str) -> str:
    """`FP32` -> `TYPE_FP32`; `BYTES` -> `TYPE_STRING`."""
    return "TYPE_STRING" if wire_type == "BYTES" else f"TYPE_{wire_type}"


def numpy_to_wire(dtype: np.dtype[np.generic]) -> str:
    """numpy dtype -> wire name (object, bytes and str arrays are BYTES)."""
    if dtype.kind in ("O", "S", "U"):
        return "BYTES"
    for name, candidate in WIRE_TO_NUMPY.items():
        if name != "BF16" and candidate == dtype:
            return name
    raise InvalidInput(f"numpy dtype {dtype} has no Triton equivalent")


def element_count(shape: list[int] | tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def expected_byte_size(datatype: str, shape: list[int] | tuple[int, ...]) -> int | None:
    """Byte size of a fixed-size tensor, or None for BYTES (variable)."""
    size = ELEMENT_SIZE.get(datatype)
    return None if size is None else size * element_count(shape)


def serialize_bytes(array: npt.NDArray[np.object_] | list[bytes | str]) -> bytes:
    """Encode BYTES elements (bytes or str) in Triton's length-prefixed format."""
    flat = array.ravel() if isinstance(array, np.ndarray) else array
    parts: list[bytes] = []
    for item in flat:
        raw = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        parts.append(struct.pack("<I", len(raw)))
        parts.append(raw)
    return b"".join(parts)


def deserialize_bytes(buffer: bytes | memoryview, count: int | None = None) -> npt.NDArray[np.object_]:
    """Decode Triton's length-prefixed BYTES format into a 1-D object array of bytes.

    When `count` is given the buffer must hold exactly that many elements.
    """
    view = memoryview(buffer)
    items: list[bytes] = []
    offset, end = 0, len(view)
    while offset < end:
        if offset + 4 > end:
            raise InvalidInput("BYTES tensor is truncated: a 4-byte length prefix is cut off")
        (length,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + length > end:
            raise InvalidInput(f"BYTES element of length {length} runs past the end of the tensor data")
        items.append(bytes(view[offset : offset + length]))
        offset += length
    if count is not None and len(items) != count:
        raise InvalidInput(f"BYTES tensor holds {len(items)} elements, but its shape needs {count}")
    result = np.empty(len(items), dtype=np.object_)
    result[:] = items
    return result


def bytes_element_offsets(buffer: bytes | memoryview) -> list[int]:
    """Start offset of every element of a serialized BYTES buffer, plus the end offset."""
    view = memoryview(buffer)
    offsets = [0]
    offset, end = 0, len(view)
    while offset < end:
        if offset + 4 > end:
            raise InvalidInput("BYTES tensor is truncated: a 4-byte length prefix is cut off")
        (length,) = struct.unpack_from("<I", view, offset)
        offset += 4 + length
        if offset > end:
            raise InvalidInput(f"BYTES element of length {length} runs past the end of the tensor data")
        offsets.append(offset)
    return offsets
