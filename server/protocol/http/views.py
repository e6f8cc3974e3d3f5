"""JSON bodies of the non-inference HTTP endpoints, shaped like Triton 2.51's (checked against it).

Triton writes protobuf messages with every field in declaration order, proto field names, enums
by name and 64-bit integers as numbers; `json_format.MessageToDict` differs in order and quotes
int64, so `message_to_json` walks the descriptor itself.
"""

from __future__ import annotations

import base64
from typing import Any, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from server.protocol.api import ModelMetadataView, RepositoryEntryView


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


def statistics_json(response: Message) -> dict[str, Any]:
    """Triton's statistics JSON: every field, with `response_stats` right after `inference_stats`."""
    data = message_to_json(response, every_field=True)
    for index, model in enumerate(data.get("model_stats", [])):
        if "response_stats" in model:
            reordered: dict[str, Any] = {}
            for key, value in model.items():
                if key != "response_stats":
                    reordered[key] = value
                if key == "inference_stats":
                    reordered["response_stats"] = model["response_stats"]
            data["model_stats"][index] = reordered
    return data


def model_metadata_json(metadata: ModelMetadataView) -> dict[str, Any]:
    return {
        "name": metadata.name,
        "versions": list(metadata.versions),
        "platform": metadata.platform,
        "inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in metadata.inputs],
        "outputs": [
            {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in metadata.outputs
        ],
    }


def repository_index_json(entries: list[RepositoryEntryView] | Any) -> list[dict[str, str]]:
    """Triton omits empty fields: a model never loaded is just `{"name": ...}`."""
    result: list[dict[str, str]] = []
    for entry in entries:
        item = {"name": entry.name}
        for key in ("version", "state", "reason"):
            value = getattr(entry, key)
            if value:
                item[key] = value
        result.append(item)
    return result
