"""gRPC front end: `inference.GRPCInferenceService` served by grpc.aio on the running event loop."""

from __future__ import annotations

import logging
from typing import Protocol

import grpc

from server.errors import ConfigError
from server.protocol.api import DataPlaneApi
from server.protocol.grpc.guard import add_guarded_service
from server.protocol.grpc.h2server import H2GrpcServer, start_h2_grpc
from server.protocol.grpc.service import InferenceRpcs
from server.protocol.grpc.tls import server_credentials, tls_enabled
from server.protocol.restricted import GRPC_HEADER_PREFIX, Restrictions, parse_restrictions

logger = logging.getLogger(__name__)

# Triton accepts and sends messages up to 2 GiB - 1; grpc's own default (4 MiB) would refuse
# ordinary image batches.
DEFAULT_MAX_MESSAGE_SIZE = (1 << 31) - 1


class GrpcOptions(Protocol):
    """The ServerOptions fields the gRPC front end reads."""

    @property
    def grpc_host(self) -> str: ...
    @property
    def grpc_port(self) -> int: ...


class GrpcServer:
    def __init__(self, server: grpc.aio.Server, port: int) -> None:
        self._server = server
        self.port = port

    async def stop(self, grace: float) -> None:
        """Refuse new RPCs, let in-flight ones finish for up to `grace` seconds, then cancel them."""
        await self._server.stop(grace)


async def start_grpc(dataplane: DataPlaneApi, options: GrpcOptions) -> GrpcServer | H2GrpcServer:
    """Listen on `options.grpc_host:options.grpc_port` (port 0: any free port, see `.port`).

    `options.grpc_stack` "h2" serves plaintext gRPC with our lean HTTP/2 server (h2server.py);
    "grpcio", or TLS, with grpc.aio.
    """
    max_size = int(getattr(options, "grpc_max_message_size", DEFAULT_MAX_MESSAGE_SIZE))
    if getattr(options, "grpc_stack", "h2") == "h2" and not tls_enabled(options):
        return await _start_h2(dataplane, options, max_size)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_size),
            ("grpc.max_send_message_length", max_size),
            # Two servers must never share a port silently (grpc enables SO_REUSEPORT by default).
            ("grpc.so_reuseport", 0),
        ]
    )
    restrictions = _restrictions(options)
    # Malformed messages -> INVALID_ARGUMENT, restricted groups -> UNAVAILABLE (guard.py).
    add_guarded_service(server, InferenceRpcs(dataplane), restrictions)
    credentials = server_credentials(options)  # TLS (tls.py), None when off
    address = f"{options.grpc_host}:{options.grpc_port}"
    try:
        if credentials is not None:
            port = server.add_secure_port(address, credentials)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ConfigError(f"cannot listen for gRPC on {address}: {exc}") from None
    if port == 0:
        raise ConfigError(f"cannot listen for gRPC on {address}: the address is in use or invalid")
    await server.start()
    logger.info("gRPC service listening on %s:%d%s", options.grpc_host, port, " (TLS)" if credentials else "")
    return GrpcServer(server, port)


def _restrictions(options: GrpcOptions) -> Restrictions:
    return parse_restrictions(
        getattr(options, "grpc_restricted_protocol", []),
        flag="--grpc-restricted-protocol",
        header_prefix=GRPC_HEADER_PREFIX,
    )


async def _start_h2(dataplane: DataPlaneApi, options: GrpcOptions, max_size: int) -> H2GrpcServer:
    address = f"{options.grpc_host}:{options.grpc_port}"
    try:
        server = await start_h2_grpc(
            dataplane, options.grpc_host, options.grpc_port, _restrictions(options), max_size
        )
    except OSError as exc:
        raise ConfigError(f"cannot listen for gRPC on {address}: {exc.strerror or exc}") from None
    logger.info("gRPC service listening on %s:%d (lean HTTP/2 stack)", options.grpc_host, server.port)
    return server
