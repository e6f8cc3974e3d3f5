"""A sequence request's id and flags as a model sees them (python models' pb_utils).

Clients send `sequence_id`, `sequence_start` and `sequence_end` as request parameters; Triton
hands a python model the id as `request.correlation_id()` and START/END as `request.flags()`
(TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1, _END = 2), not among its `parameters()`."""

from __future__ import annotations

from typing import Any

FLAG_SEQUENCE_START, FLAG_SEQUENCE_END = 1, 2
_KEYS = ("sequence_id", "sequence_start", "sequence_end")


def pop_sequence_fields(parameters: dict[str, Any]) -> tuple[int | str, int]:
    """(correlation id, flags), taking the three sequence parameters out of `parameters`."""
    if not any(key in parameters for key in _KEYS):
        return 0, 0
    corrid = parameters.pop("sequence_id", 0)
    if isinstance(corrid, bool) or not isinstance(corrid, int | str):
        corrid = 0
    flags = 0
    if _truthy(parameters.pop("sequence_start", False)):
        flags |= FLAG_SEQUENCE_START
    if _truthy(parameters.pop("sequence_end", False)):
        flags |= FLAG_SEQUENCE_END
    return corrid, flags


def _truthy(value: Any) -> bool:
    return value.lower() == "true" if isinstance(value, str) else bool(value)


def sequence_input_names(config: Any) -> list[str]:
    """The model inputs a sequence batcher feeds besides the configured ones: control inputs,
    then state inputs, in config order (backends that map inputs by name or index need them)."""
    if not config.HasField("sequence_batching"):
        return []
    batching = config.sequence_batching
    return [item.name for item in batching.control_input] + [state.input_name for state in batching.state]


def sequence_output_names(config: Any) -> list[str]:
    """The state outputs a sequence model makes besides its configured outputs (config order)."""
    if not config.HasField("sequence_batching"):
        return []
    return [state.output_name for state in config.sequence_batching.state]
