"""Restricted APIs: Triton's `--http-restricted-api` and `--grpc-restricted-protocol`.

    --http-restricted-api=model-repository,statistics:admin-key=s3cret
    --grpc-restricted-protocol=model-repository:admin-key=s3cret

Each flag names groups of endpoints (Triton's nine: health, metadata, inference, shared-memory,
model-config, model-repository, statistics, trace, logging) and the header a caller must send
with the exact value. HTTP expects the header `admin-key`; gRPC the metadata key
`triton-grpc-protocol-admin-key`. A group may be restricted only once per flag. Without the header
HTTP answers 403 and gRPC UNAVAILABLE, with Triton's messages. Everything not named stays open.
"""

from __future__ import annotations

from collections.abc import Mapping

from server.vocabulary.restrictions import (
    Restriction,
    Restrictions,
)

# Where each route of the HTTP API belongs (after /v2/models/<name>[/versions/<v>]/).
_MODEL_ACTIONS = {
    "": "metadata",
    "ready": "health",
    "config": "model-config",
    "stats": "statistics",
    "infer": "inference",
    "generate": "inference",
    "generate_stream": "inference",
    "trace/setting": "trace",
}
_TOP_LEVEL = {
    "health": "health",
    "repository": "model-repository",
    "systemsharedmemory": "shared-memory",
    "cudasharedmemory": "shared-memory",
    "trace": "trace",
    "logging": "logging",
}


def http_category(path: str) -> str | None:
    """The group of an HTTP path (`/v2/...`, still percent-encoded), None for unknown routes."""
    parts = path.strip("/").split("/")
    if parts[0] != "v2":
        return None
    rest = parts[1:]
    if not rest or rest == [""]:
        return "metadata"
    if rest[0] != "models":
        return _TOP_LEVEL.get(rest[0])
    tail = rest[1:]
    if tail == ["stats"]:
        return "statistics"
    if not tail:
        return None
    tail = tail[1:]
    if len(tail) >= 2 and tail[0] == "versions":
        tail = tail[2:]
    return _MODEL_ACTIONS.get("/".join(tail))


def http_denial(restrictions: Restrictions, path: str, headers: Mapping[str, str]) -> str | None:
    """Triton's 403 message when `path` is restricted and the header is missing or wrong."""
    category = http_category(path)
    restriction = restrictions.get(category) if category is not None else None
    if restriction is None or headers.get(restriction.key) == restriction.value:
        return None
    return f"This API is restricted, expecting header '{restriction.header}'"


# The RPCs of inference.GRPCInferenceService by group.
GRPC_CATEGORIES = {
    "ServerLive": "health",
    "ServerReady": "health",
    "ModelReady": "health",
    "ServerMetadata": "metadata",
    "ModelMetadata": "metadata",
    "ModelInfer": "inference",
    "ModelStreamInfer": "inference",
    "ModelConfig": "model-config",
    "ModelStatistics": "statistics",
    "RepositoryIndex": "model-repository",
    "RepositoryModelLoad": "model-repository",
    "RepositoryModelUnload": "model-repository",
    "SystemSharedMemoryStatus": "shared-memory",
    "SystemSharedMemoryRegister": "shared-memory",
    "SystemSharedMemoryUnregister": "shared-memory",
    "CudaSharedMemoryStatus": "shared-memory",
    "CudaSharedMemoryRegister": "shared-memory",
    "CudaSharedMemoryUnregister": "shared-memory",
    "TraceSetting": "trace",
    "LogSettings": "logging",
}


def grpc_denial_message(restriction: Restriction) -> str:
    return f"This protocol is restricted, expecting header '{restriction.header}'"
