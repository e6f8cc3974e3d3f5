"""JSON bodies of the non-inference HTTP endpoints, shaped like Triton 2.51's (checked against it).

Protobuf messages are written by `message_to_json` (server/repository/json_codec.py), the one
converter the server and tritonctl share.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from server.protocol.api import ModelMetadataView, RepositoryEntryView
from server.repository.json_codec import message_to_json


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
