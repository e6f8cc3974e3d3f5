"""ModelConfig <-> the JSON Triton's HTTP API speaks (GET /v2/models/NAME/config, load with config).

Triton prints every field, defaults included, in declaration order, with proto field names, enums
by name and 64-bit integers as JSON numbers (protobuf's JSON mapping would quote them and reorder),
so clients that read `config["max_batch_size"]` or `input[0]["dims"]` get numbers.
`message_to_json` is the one protobuf -> JSON converter: configs here, statistics and the HTTP
config endpoint in server/protocol/http/views.py.
"""

from __future__ import annotations

import base64
import json
from typing import Any, cast

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from server.errors import ConfigError
from server.repository.schema import ModelConfig


def message_to_json(message: Message, every_field: bool = False) -> dict[str, Any]:
    """A protobuf message as Triton's JSON: declaration order, numbers as numbers.

    Fields without presence (scalars, repeated, maps) are always written; sub-messages and oneof
    members only when set, unless `every_field` (Triton's statistics print every sub-message).
    """
    descriptor = cast(Descriptor, message.DESCRIPTOR)  # the stubs also allow upb's own type
    result: dict[str, Any] = {}
    for field in descriptor.fields:
        is_message = field.type == FieldDescriptor.TYPE_MESSAGE
        if (
            not field.is_repeated
            and field.has_presence
            and not message.HasField(field.name)
            and not (every_field and is_message)
        ):
            continue
        value = getattr(message, field.name)
        if _is_map(field):
            value_field = _map_value_field(field)
            result[field.name] = {
                str(key): _value_to_json(value_field, item, every_field) for key, item in value.items()
            }
        elif field.is_repeated:
            result[field.name] = [_value_to_json(field, item, every_field) for item in value]
        else:
            result[field.name] = _value_to_json(field, value, every_field)
    return result


def _is_map(field: FieldDescriptor) -> bool:
    message_type = field.message_type
    return field.is_repeated and message_type is not None and bool(message_type.GetOptions().map_entry)


def _map_value_field(field: FieldDescriptor) -> FieldDescriptor:
    assert field.message_type is not None
    return field.message_type.fields_by_name["value"]


def _value_to_json(field: FieldDescriptor, value: Any, every_field: bool) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message_to_json(value, every_field)
    if field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        enum_value = field.enum_type.values_by_number.get(value)
        return enum_value.name if enum_value is not None else value
    if field.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode("ascii")
    return value


def config_to_json(config: Any) -> dict[str, Any]:
    """The model config as Triton's HTTP endpoint returns it (see module doc)."""
    return message_to_json(config)


def config_from_json(data: dict[str, Any] | str) -> Any:
    """Parse a JSON model config (as sent with a load request); raises ConfigError."""
    try:
        parsed = json.loads(data) if isinstance(data, str) else data
        if not isinstance(parsed, dict):
            raise ConfigError("model config JSON must be an object")
        return json_format.ParseDict(parsed, ModelConfig())
    except (json.JSONDecodeError, json_format.ParseError) as exc:
        raise ConfigError(f"invalid model config JSON: {exc}") from None
