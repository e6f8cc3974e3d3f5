"""The ground floor: config.pbtxt schema, server-level config, repository scan, version policy,
default file names, semantic validation and auto-complete. Light imports only (protobuf, numpy);
onnx and torch load lazily when a model file is inspected."""

from __future__ import annotations

from server.repository.autocomplete import autocomplete_config, fill_defaults
from server.repository.diagnostics import Diagnostic
from server.repository.json_codec import config_from_json, config_to_json
from server.repository.layout import (
    MODEL_NAME_PATTERN,
    backend_name,
    default_model_filename,
    resolve_versions,
    validate_model_name,
)
from server.repository.loader import ModelEntry, load_model_config, scan_repository
from server.repository.rules import check_model_config
from server.repository.schema import ConfigSource, ModelConfig, parse_model_config
from server.repository.server_config import (
    ServerConfig,
    backend_parameters,
    find_server_config,
    load_server_config,
    parse_server_config,
)

__all__ = [
    "MODEL_NAME_PATTERN",
    "ConfigSource",
    "Diagnostic",
    "ModelConfig",
    "ModelEntry",
    "ServerConfig",
    "autocomplete_config",
    "backend_name",
    "backend_parameters",
    "check_model_config",
    "config_from_json",
    "config_to_json",
    "default_model_filename",
    "fill_defaults",
    "find_server_config",
    "load_model_config",
    "load_server_config",
    "parse_model_config",
    "parse_server_config",
    "resolve_versions",
    "scan_repository",
    "validate_model_name",
]
