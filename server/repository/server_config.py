"""The server-level config: a `config.pbtxt` at the repository root (or `--server-config FILE`).

Triton has no such file; the user's design describes one, so it is a small message of our own,
built at import time on top of `model_config.proto` so that every entry is a real
`inference.ModelConfig`:

    message ModelConfigEntry { inference.ModelConfig config = 1; }
    message BackendConfig    { string backend = 1; map<string, string> parameters = 2; }
    message ServerConfig     { repeated ModelConfigEntry model_config_list = 1;
                               repeated BackendConfig backend_config = 2; }

It parses the seed's text verbatim (list syntax, `key`/`value` map entries, `# 4GB` comments).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from tritonclient.grpc import model_config_pb2

from server.errors import ConfigError
from server.repository.diagnostics import error, summarize
from server.repository.locations import Locations, index_text
from server.repository.schema import ConfigSource, parse_text

_PACKAGE = "tritonctl"
_FILE_NAME = "tritonctl/server_config.proto"
_F = descriptor_pb2.FieldDescriptorProto


def _field(name: str, number: int, kind: Any, label: Any = _F.LABEL_OPTIONAL, type_name: str = "") -> Any:
    return _F(name=name, number=number, type=kind, label=label, type_name=type_name or None)


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(
        name=_FILE_NAME, package=_PACKAGE, syntax="proto3", dependency=[model_config_pb2.DESCRIPTOR.name]
    )
    entry = proto.message_type.add(name="ModelConfigEntry")
    entry.field.append(_field("config", 1, _F.TYPE_MESSAGE, type_name=".inference.ModelConfig"))

    backend = proto.message_type.add(name="BackendConfig")
    backend.field.append(_field("backend", 1, _F.TYPE_STRING))
    parameters_entry = backend.nested_type.add(name="ParametersEntry")
    parameters_entry.options.map_entry = True
    parameters_entry.field.append(_field("key", 1, _F.TYPE_STRING))
    parameters_entry.field.append(_field("value", 2, _F.TYPE_STRING))
    backend.field.append(
        _field(
            "parameters",
            2,
            _F.TYPE_MESSAGE,
            _F.LABEL_REPEATED,
            f".{_PACKAGE}.BackendConfig.ParametersEntry",
        )
    )

    server = proto.message_type.add(name="ServerConfig")
    server.field.append(
        _field("model_config_list", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, f".{_PACKAGE}.ModelConfigEntry")
    )
    server.field.append(
        _field("backend_config", 2, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, f".{_PACKAGE}.BackendConfig")
    )
    return proto


def _message_class(name: str) -> Any:
    pool = descriptor_pool.Default()
    try:
        descriptor = pool.FindMessageTypeByName(f"{_PACKAGE}.{name}")
    except KeyError:
        pool.Add(_file_descriptor())
        descriptor = pool.FindMessageTypeByName(f"{_PACKAGE}.{name}")
    return message_factory.GetMessageClass(descriptor)


if TYPE_CHECKING:
    from collections.abc import MutableMapping, MutableSequence

    from google.protobuf.message import Message

    class ModelConfigEntry(Message):
        config: Any

    class BackendConfig(Message):
        backend: str
        parameters: MutableMapping[str, str]

    class ServerConfig(Message):
        model_config_list: MutableSequence[ModelConfigEntry]
        backend_config: MutableSequence[BackendConfig]

else:
    ModelConfigEntry = _message_class("ModelConfigEntry")
    BackendConfig = _message_class("BackendConfig")
    ServerConfig = _message_class("ServerConfig")


# Where each loaded server config came from, so a model's entry can be reported at its line.
# Protobuf messages take no extra attributes, hence this side table keyed by identity (the value
# holds the message itself, so the id cannot be reused while the entry lives).
_ORIGINS: dict[int, tuple[ServerConfig, str, Locations]] = {}
_MAX_ORIGINS = 64


def parse_server_config(text: str, path: str = "config.pbtxt") -> ServerConfig:
    """Parse server-level config text; raises ConfigError with a Diagnostic."""
    config = ServerConfig()
    parse_text(text, config, path)
    _ORIGINS[id(config)] = (config, path, index_text(text))
    while len(_ORIGINS) > _MAX_ORIGINS:  # a long-lived server reloads; forget the oldest
        del _ORIGINS[next(iter(_ORIGINS))]
    return config


def load_server_config(path: Path) -> ServerConfig:
    """Read a server-level config file (see module doc); raises ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        diagnostic = error(
            "E110-unreadable-config",
            f"cannot read the server config file: {exc}",
            "pass an existing, readable UTF-8 file",
            file=str(path),
        )
        raise ConfigError(summarize([diagnostic]), [diagnostic]) from None
    return parse_server_config(text, str(path))


def find_server_config(root: Path) -> Path | None:
    """The repository's root `config.pbtxt`, the server-level config, if there is one."""
    candidate = root / "config.pbtxt"
    return candidate if candidate.is_file() else None


def server_entry_source(server_config: ServerConfig, index: int) -> ConfigSource:
    """Where model_config_list[index].config sits, for diagnostics about that model."""
    origin = _ORIGINS.get(id(server_config))
    if origin is None or origin[0] is not server_config:
        return ConfigSource("<server config>")
    _, path, locations = origin
    return ConfigSource(path, locations.subtree(f"model_config_list[{index}].config"))


def server_entry_line(server_config: ServerConfig, index: int) -> int | None:
    origin = _ORIGINS.get(id(server_config))
    if origin is None or origin[0] is not server_config:
        return None
    position = origin[2].find(f"model_config_list[{index}]")
    return position.line if position else None


def backend_parameters(server_config: ServerConfig | None, backend: str) -> dict[str, str]:
    """The server-level `backend_config` parameters of one backend (later entries win)."""
    parameters: dict[str, str] = {}
    if server_config is None:
        return parameters
    for entry in server_config.backend_config:
        if entry.backend == backend:
            parameters.update(entry.parameters)
    return parameters
