"""Request data for a perf run: which inputs a model takes, and the tensors to send.

Shapes and datatypes come from the model config when the server has that endpoint (Triton, ours),
from the model metadata when it does not (MLServer and other KServe v2 servers), and from
`--shape` / `--dtype` flags where neither says enough. Like perf_analyzer, `--shape` and data files
describe one sample (no batch dimension) for models that batch; `-b` adds the batch dimension.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tritonctl.perf.errors import PerfUsageError
from tritonctl.perf.settings import InputSettings

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2

    from tritonctl.perf.control import ModelInfo

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class InputSpec:
    """One model input as the run will send it."""

    name: str
    datatype: str  # wire name
    sample_shape: list[int]  # without the batch dimension when `batched`
    batched: bool

    def full_shape(self, batch_size: int) -> list[int]:
        return [batch_size, *self.sample_shape] if self.batched else list(self.sample_shape)


def _wire_datatype(config_type: int) -> str:
    from tritonclient.grpc import model_config_pb2

    name = str(model_config_pb2.DataType.Name(config_type)).removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


def _declared_inputs(info: ModelInfo, config: model_config_pb2.ModelConfig | None) -> list[InputSpec]:
    if config is not None and len(config.input) > 0:
        batched = config.max_batch_size > 0
        return [
            InputSpec(tensor.name, _wire_datatype(tensor.data_type), [int(d) for d in tensor.dims], batched)
            for tensor in config.input
            if not tensor.optional
        ]
    specs = []
    for tensor in info.inputs:
        # Without a config, a leading -1 is taken as the batch dimension (the KServe v2 convention).
        batched = bool(tensor.shape) and tensor.shape[0] == -1
        sample = tensor.shape[1:] if batched else tensor.shape
        specs.append(InputSpec(tensor.name, tensor.datatype, list(sample), batched))
    return specs


def resolve_inputs(
    info: ModelInfo, config: model_config_pb2.ModelConfig | None, settings: InputSettings
) -> list[InputSpec]:
    """The inputs to send, with every dimension and datatype known; flags override the server."""
    declared = {spec.name: spec for spec in _declared_inputs(info, config)}
    for name in (*settings.shapes, *settings.datatypes):
        if declared and name not in declared:
            known = ", ".join(declared)
            raise PerfUsageError(f"the model has no input {name!r} (its inputs: {known})")
    if not declared:
        # The server describes no inputs: the flags are the whole description.
        if not settings.shapes:
            raise PerfUsageError(
                "the server does not describe the model's inputs: give each one with --shape NAME:DIMS "
                "(full shape) and --dtype NAME:DATATYPE"
            )
        declared = {name: InputSpec(name, "FP32", [], False) for name in settings.shapes}
    resolved = []
    for spec in declared.values():
        shape = settings.shapes.get(spec.name, spec.sample_shape)
        datatype = settings.datatypes.get(spec.name, spec.datatype)
        if not datatype:
            raise PerfUsageError(
                f"input {spec.name!r}: the server gives no datatype; add --dtype {spec.name}:FP32"
            )
        if any(d < 0 for d in shape):
            hint = " (one sample, without the batch dimension)" if spec.batched else ""
            raise PerfUsageError(
                f"input {spec.name!r} has variable dimensions {shape}: "
                f"give them with --shape {spec.name}:DIMS{hint}"
            )
        resolved.append(InputSpec(spec.name, datatype, list(shape), spec.batched))
    if settings.batch_size > 1 and not any(spec.batched for spec in resolved):
        raise PerfUsageError(
            f"-b {settings.batch_size}: the model does not batch (max_batch_size 0); use -b 1"
        )
    return resolved


def _numpy_dtype(datatype: str) -> np.dtype[Any]:
    from server.vocabulary.dtypes import WIRE_TO_NUMPY

    return WIRE_TO_NUMPY[datatype]


def _random_sample(spec: InputSpec, rng: np.random.Generator, string_length: int) -> Array:
    shape = spec.sample_shape
    if spec.datatype == "BYTES":
        letters = rng.integers(ord("a"), ord("z") + 1, size=(max(1, int(np.prod(shape))), string_length))
        items = [bytes(row.astype(np.uint8)) for row in letters]
        return np.array(items[: int(np.prod(shape))], dtype=np.object_).reshape(shape)
    dtype = _numpy_dtype(spec.datatype)
    if spec.datatype == "BOOL":
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if dtype.kind in "iu":
        return rng.integers(0, 64, size=shape).astype(dtype)
    return rng.random(size=shape).astype(dtype)


def _zero_sample(spec: InputSpec, string_length: int) -> Array:
    if spec.datatype == "BYTES":
        return np.full(spec.sample_shape, b"0" * string_length, dtype=np.object_)
    return np.zeros(spec.sample_shape, dtype=_numpy_dtype(spec.datatype))


def _batch(spec: InputSpec, sample: Array, batch_size: int) -> Array:
    """A sample repeated along a new batch dimension; a full-shape array passes through."""
    if not spec.batched:
        return sample
    if sample.ndim == len(spec.sample_shape) + 1:
        if sample.shape[0] != batch_size:
            raise PerfUsageError(
                f"input {spec.name!r}: data holds a batch of {sample.shape[0]}, but -b is {batch_size}"
            )
        return sample
    return np.repeat(sample[np.newaxis, ...], batch_size, axis=0)


def _from_json_value(spec: InputSpec, value: Any, where: str) -> Array:
    shape = spec.sample_shape
    if isinstance(value, dict):
        shape = [int(d) for d in value.get("shape", shape)]
        if "b64" in value:
            raw = base64.b64decode(value["b64"])
            if spec.datatype == "BYTES":
                return np.array([raw], dtype=np.object_).reshape(shape or [1])
            return np.frombuffer(raw, dtype=_numpy_dtype(spec.datatype)).reshape(shape).copy()
        if "content" not in value:
            raise PerfUsageError(f"{where}: expected a list, or an object with 'content' or 'b64'")
        value = value["content"]
    if spec.datatype == "BYTES":
        flat = np.array(
            [v.encode() if isinstance(v, str) else bytes(v) for v in np.ravel(np.array(value, dtype=object))],
            dtype=np.object_,
        )
    else:
        flat = np.ravel(np.array(value, dtype=_numpy_dtype(spec.datatype)))
    try:
        return flat.reshape(shape)
    except ValueError:
        raise PerfUsageError(f"{where}: {flat.size} values do not fit the shape {shape}") from None


def load_json_steps(path: Path, specs: list[InputSpec], batch_size: int) -> list[dict[str, Array]]:
    """perf_analyzer's --input-data JSON: {"data": [{NAME: values | {content, shape} | {b64}}, ...]}."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PerfUsageError(f"--input-data {path}: cannot read JSON ({exc})") from exc
    entries = document.get("data") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise PerfUsageError(f"--input-data {path}: expected an object with a non-empty 'data' list")
    if all(isinstance(entry, list) for entry in entries):  # several streams: play them one after another
        entries = [step for stream in entries for step in stream]
    steps = []
    by_name = {spec.name: spec for spec in specs}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise PerfUsageError(f"--input-data {path}: data[{index}] is not an object")
        unknown = set(entry) - set(by_name)
        missing = set(by_name) - set(entry)
        if unknown or missing:
            raise PerfUsageError(
                f"--input-data {path}: data[{index}] "
                + (f"names unknown inputs {sorted(unknown)} " if unknown else "")
                + (f"lacks inputs {sorted(missing)}" if missing else "")
            )
        steps.append(
            {
                name: _batch(spec, _from_json_value(spec, entry[name], f"data[{index}].{name}"), batch_size)
                for name, spec in by_name.items()
            }
        )
    return steps


def _load_npy(path: Path, spec: InputSpec, batch_size: int) -> Array:
    try:
        array = np.load(path, allow_pickle=spec.datatype == "BYTES")
    except (OSError, ValueError) as exc:
        raise PerfUsageError(f"--input-data {path}: cannot read .npy ({exc})") from exc
    if spec.datatype == "BYTES":
        array = np.vectorize(lambda v: v.encode() if isinstance(v, str) else bytes(v), otypes=[object])(array)
    else:
        array = array.astype(_numpy_dtype(spec.datatype), copy=False)
    return _batch(spec, array, batch_size)


def build_steps(specs: list[InputSpec], settings: InputSettings) -> list[dict[str, Array]]:
    """The tensors of each distinct request, full shapes; requests cycle through the list."""
    source = settings.source
    batch = settings.batch_size
    if source in ("random", "zero"):
        rng = np.random.default_rng(settings.seed)
        step = {}
        for spec in specs:
            sample = (
                _random_sample(spec, rng, settings.string_length)
                if source == "random"
                else _zero_sample(spec, settings.string_length)
            )
            step[spec.name] = _batch(spec, sample, batch)
        return [step]
    path = Path(source)
    if path.is_dir():
        missing = [spec.name for spec in specs if not (path / f"{spec.name}.npy").exists()]
        if missing:
            raise PerfUsageError(f"--input-data {path}: missing {', '.join(m + '.npy' for m in missing)}")
        return [{spec.name: _load_npy(path / f"{spec.name}.npy", spec, batch) for spec in specs}]
    if path.suffix == ".npy":
        if len(specs) != 1:
            raise PerfUsageError(
                f"--input-data {path}: one .npy file fits a model with one input; this one has "
                f"{len(specs)} (use a folder holding NAME.npy per input)"
            )
        return [{specs[0].name: _load_npy(path, specs[0], batch)}]
    return load_json_steps(path, specs, batch)
