"""Build input tensors from the command line: `NAME=VALUE`, VALUE a `.npy` file, a JSON file or JSON.

The datatype and shape come from the model's metadata: values are converted to the input's
datatype, variable dimensions (-1) take the value's size, and a value without the batch dimension
gets one of size 1. Anything that does not fit raises InvalidInput naming the input and both shapes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from server.errors import InvalidInput
from tritonctl.client.connection import ModelSignature, TensorSpec


def split_assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise InvalidInput(
            f"--input '{text}' must look like NAME=VALUE (VALUE: a .npy file, a .json file or JSON)"
        )
    return name.strip(), value


def is_file(value: str) -> bool:
    """Whether `value` names an existing file (a long JSON literal is not a valid path at all)."""
    try:
        return Path(value).is_file()
    except (OSError, ValueError):
        return False


def read_value(value: str) -> Any:
    """A `.npy` file -> ndarray; a JSON file or a JSON literal -> Python data; else the plain string."""
    path = Path(value)
    if value.endswith(".npy"):
        if not is_file(value):
            raise InvalidInput(f"no such .npy file: {value}")
        return np.load(path, allow_pickle=False)
    if value.endswith(".json") and is_file(value):
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{value} is not valid JSON: {exc}") from None
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value  # a bare word: a one-element BYTES input such as --input TEXT=hello


def to_tensor(spec: TensorSpec, value: Any, model: str) -> npt.NDArray[Any]:
    """Convert `value` to the input's datatype and a shape the model accepts."""
    if spec.datatype == "BYTES":
        array = np.array(value, dtype=np.object_)
        array = np.vectorize(_as_bytes, otypes=[np.object_])(array) if array.size else array
    else:
        from tritonclient.utils import triton_to_np_dtype  # BF16 -> ml_dtypes.bfloat16, like tritonclient

        dtype = triton_to_np_dtype(spec.datatype)
        if dtype is None:
            raise InvalidInput(
                f"input '{spec.name}' has datatype {spec.datatype}, which tritonctl cannot build"
            )
        try:
            array = np.asarray(value, dtype=dtype)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidInput(
                f"value of input '{spec.name}' cannot be read as {spec.datatype}: {exc}"
            ) from None
    return fit_shape(spec, array, model)


def _as_bytes(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    return item.encode("utf-8") if isinstance(item, str) else json.dumps(item).encode("utf-8")


def fit_shape(spec: TensorSpec, array: npt.NDArray[Any], model: str) -> npt.NDArray[Any]:
    expected = spec.shape
    shape = list(array.shape)
    if len(shape) == len(expected) - 1 and expected and expected[0] == -1:
        array = array.reshape([1, *shape])  # add the batch dimension
        shape = [1, *shape]
    if len(shape) == len(expected) and all(e in (-1, s) for e, s in zip(expected, shape, strict=True)):
        return array
    fixed = [d for d in expected if d != -1]
    if -1 not in expected and array.size == int(np.prod(fixed, dtype=np.int64)):
        return array.reshape(expected)  # a flat list for a fixed shape
    raise InvalidInput(
        f"input '{spec.name}' of model '{model}' expects shape {expected} ({spec.datatype}), "
        f"but the value has shape {shape}"
    )


def build_inputs(
    signature: ModelSignature, assignments: list[str]
) -> dict[str, tuple[str, npt.NDArray[Any]]]:
    """`--input` texts -> name -> (datatype, array), checked against the model's inputs."""
    result: dict[str, tuple[str, npt.NDArray[Any]]] = {}
    for text in assignments:
        name, raw = split_assignment(text)
        if name in result:
            raise InvalidInput(f"input '{name}' is given twice")
        spec = signature.input(name)
        result[name] = (spec.datatype, to_tensor(spec, read_value(raw), signature.name))
    missing = [spec.name for spec in signature.inputs if spec.name not in result and not spec.optional]
    if missing:
        raise InvalidInput(
            f"model '{signature.name}' needs input(s) {', '.join(missing)}: add --input NAME=VALUE for each"
        )
    return result
