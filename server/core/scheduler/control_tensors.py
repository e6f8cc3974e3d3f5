"""The sequence batcher's control tensors: START, END, READY and CORRID, as the config asks.

`sequence_batching.control_input` names model inputs the batcher fills in for every batch row
(model_config.proto `ModelSequenceBatching.Control`): START/END/READY with the false and true
values of `int32_false_true`, `fp32_false_true` or `bool_false_true`, CORRID with the sequence id
in `data_type` (UINT64, INT64, UINT32, INT32 or STRING). Each tensor holds one value per row:
shape [1] for a model without batching, [1, 1] for one row of a batching model (the batcher sends
one row per request, as Triton requires batch size 1 of sequence requests).

`ControlTensors.for_row(...)` is called once per dispatched row; every value's bytes are built
once here, so a row costs a few small Tensor objects and no numpy.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from server.vocabulary.types import Tensor

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2

START, READY, END, CORRID = 0, 1, 2, 3  # ModelSequenceBatching.Control.Kind

# CORRID data types: (wire name, struct format); STRING is length-prefixed BYTES.
_CORRID_TYPES = {
    "TYPE_UINT64": ("UINT64", "<Q"),
    "TYPE_INT64": ("INT64", "<q"),
    "TYPE_UINT32": ("UINT32", "<I"),
    "TYPE_INT32": ("INT32", "<i"),
    "TYPE_STRING": ("BYTES", ""),
}
CORRID_DATA_TYPES = tuple(_CORRID_TYPES)


@dataclass(frozen=True, slots=True)
class _Flag:
    """A START/END/READY input: its name, wire type and the bytes of false and true."""

    name: str
    datatype: str
    false: bytes
    true: bytes


@dataclass(frozen=True, slots=True)
class _CorrId:
    name: str
    datatype: str
    fmt: str  # "" for BYTES


def _flag(name: str, control: model_config_pb2.ModelSequenceBatching.Control) -> _Flag:
    if len(control.fp32_false_true) == 2:
        false, true = control.fp32_false_true
        return _Flag(name, "FP32", struct.pack("<f", false), struct.pack("<f", true))
    if len(control.bool_false_true) == 2:
        false_b, true_b = control.bool_false_true
        return _Flag(name, "BOOL", bytes([bool(false_b)]), bytes([bool(true_b)]))
    false_i, true_i = control.int32_false_true if len(control.int32_false_true) == 2 else (0, 1)
    return _Flag(name, "INT32", struct.pack("<i", false_i), struct.pack("<i", true_i))


def corrid_bytes(datatype: str, fmt: str, corrid: int | str) -> bytes:
    """One CORRID value in the input's type (a string id into an integer input: 0, as Triton)."""
    if datatype == "BYTES":
        text = str(corrid).encode()
        return struct.pack("<I", len(text)) + text
    value = corrid if isinstance(corrid, int) else 0
    try:
        return struct.pack(fmt, value)
    except struct.error:  # out of range for a narrower type: keep the low bits, as a C cast does
        bits = struct.calcsize(fmt) * 8
        value &= (1 << bits) - 1
        if fmt.islower() and value >= 1 << (bits - 1):
            value -= 1 << bits
        return struct.pack(fmt, value)


class ControlTensors:
    """The control inputs of one sequence model, ready to be filled in per batch row."""

    def __init__(self, config: model_config_pb2.ModelConfig) -> None:
        self.shape = [1, 1] if config.max_batch_size > 0 else [1]
        self.start: _Flag | None = None
        self.end: _Flag | None = None
        self.ready: _Flag | None = None
        self.corrid: _CorrId | None = None
        from tritonclient.grpc import model_config_pb2 as pb

        for control_input in config.sequence_batching.control_input:
            for control in control_input.control:
                if control.kind == START:
                    self.start = _flag(control_input.name, control)
                elif control.kind == END:
                    self.end = _flag(control_input.name, control)
                elif control.kind == READY:
                    self.ready = _flag(control_input.name, control)
                elif control.kind == CORRID:
                    type_name = pb.DataType.Name(control.data_type)
                    datatype, fmt = _CORRID_TYPES.get(type_name, ("UINT64", "<Q"))
                    self.corrid = _CorrId(control_input.name, datatype, fmt)
        self.names = frozenset(
            item.name for item in (self.start, self.end, self.ready, self.corrid) if item is not None
        )
        # The START/END/READY tensors of every combination, built once: rows share them (nothing
        # downstream changes an input tensor), so a row costs a tuple lookup and its CORRID.
        self._flags: dict[tuple[bool, bool, bool], tuple[Tensor, ...]] = {
            (start, end, ready): self._flag_tensors(start, end, ready)
            for start in (False, True)
            for end in (False, True)
            for ready in (False, True)
        }

    def _flag_tensors(self, start: bool, end: bool, ready: bool) -> tuple[Tensor, ...]:
        tensors = []
        for flag, value in ((self.start, start), (self.end, end), (self.ready, ready)):
            if flag is not None:
                tensors.append(
                    Tensor(flag.name, flag.datatype, list(self.shape), flag.true if value else flag.false)
                )
        return tuple(tensors)

    def __bool__(self) -> bool:
        return bool(self.names)

    def for_row(self, *, start: bool, end: bool, ready: bool, corrid: int | str) -> list[Tensor]:
        """The control tensors of one batch row (a null row: ready False, corrid 0)."""
        tensors = list(self._flags[start, end, ready])
        corr = self.corrid
        if corr is not None:
            data = corrid_bytes(corr.datatype, corr.fmt, corrid)
            tensors.append(Tensor(corr.name, corr.datatype, list(self.shape), data))
        return tensors
