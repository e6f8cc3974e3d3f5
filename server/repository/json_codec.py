"""ModelConfig <-> the JSON Triton's HTTP API speaks (GET /v2/models/NAME/config, load with config).

Triton prints every field, defaults included, with proto field names, enums by name and 64-bit
integers as JSON numbers (protobuf's JSON mapping would quote them), so clients that read
`config["max_batch_size"]` or `input[0]["dims"]` get numbers.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from server.errors import ConfigError
from server.repository.schema import ModelConfig

_INT64_TYPES = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


def _is_map(field: FieldDescriptor) -> bool:
    message_type = field.message_type
    return message_type is not None and message_type.GetOptions().map_entry


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _numbers(value: Any, descriptor: Descriptor) -> Any:
    """Turn the quoted 64-bit integers of `MessageToDict` output back into numbers, in place."""
    for field in descriptor.fields:
        if field.name not in value:
            continue
        item = value[field.name]
        if _is_map(field):
            value_field = field.message_type.fields_by_name["value"]  # type: ignore[union-attr]
            for key, entry in item.items():
                item[key] = _convert(entry, value_field)
        elif _is_repeated(field):
            value[field.name] = [_convert(entry, field) for entry in item]
        else:
            value[field.name] = _convert(item, field)
    return value


def _convert(item: Any, field: FieldDescriptor) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return _numbers(item, field.message_type)  # type: ignore[arg-type]
    if field.type in _INT64_TYPES and isinstance(item, str):
        return int(item)
    return item


def config_to_json(config: Any) -> dict[str, Any]:
    """The model config as Triton's HTTP endpoint returns it (see module doc)."""
    data = json_format.MessageToDict(
        config, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )
    return dict(_numbers(data, config.DESCRIPTOR))


def config_from_json(data: dict[str, Any] | str) -> Any:
    """Parse a JSON model config (as sent with a load request); raises ConfigError."""
    try:
        parsed = json.loads(data) if isinstance(data, str) else data
        if not isinstance(parsed, dict):
            raise ConfigError("model config JSON must be an object")
        return json_format.ParseDict(parsed, ModelConfig())
    except (json.JSONDecodeError, json_format.ParseError) as exc:
        raise ConfigError(f"invalid model config JSON: {exc}") from None
