"""gRPC front end: `inference.GRPCInferenceService` on the running event loop.

Plaintext gRPC is served by our lean HTTP/2 server (h2server.py, `--grpc-stack=h2`, the default);
TLS or `--grpc-stack=grpcio` by grpc.aio (guard.py). Both call the same RPCs (service.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

import grpc

from server.errors import ConfigError
from server.protocol.api import DataPlaneApi
from server.protocol.grpc.guard import add_guarded_service
from server.protocol.grpc.h2server import H2Connection, H2Settings
from server.protocol.grpc.service import InferenceRpcs
from server.protocol.grpc.tls import TlsOptions, server_credentials, tls_enabled
from server.vocabulary.restrictions import GRPC_HEADER_PREFIX, Restrictions, parse_restrictions
from server.vocabulary.shm_regions import RegionTable

logger = logging.getLogger(__name__)


class GrpcOptions(TlsOptions, Protocol):
    """The ServerOptions fields the gRPC front end reads."""

    @property
    def grpc_host(self) -> str: ...
    @property
    def grpc_port(self) -> int: ...
    @property
    def grpc_max_message_size(self) -> int: ...
    @property
    def grpc_stack(self) -> str: ...
    @property
    def grpc_restricted_protocol(self) -> list[str]: ...


class GrpcServer:
    def __init__(self, server: grpc.aio.Server, port: int) -> None:
        self._server = server
        self.port = port

    async def stop(self, grace: float) -> None:
        """Refuse new RPCs, let in-flight ones finish for up to `grace` seconds, then cancel them."""
        await self._server.stop(grace)


async def start_grpc(
    dataplane: DataPlaneApi,
    options: GrpcOptions,
    regions: RegionTable | None = None,
) -> GrpcServer | H2GrpcServer:
    """Listen on `options.grpc_host:options.grpc_port` (port 0: any free port, see `.port`).
    `regions`: the client shared-memory regions, CUDA ones through `regions.cuda` (shared with HTTP;
    None: refused).

    `options.grpc_stack` "h2" serves plaintext gRPC with our lean HTTP/2 server (h2server.py);
    "grpcio", or TLS, with grpc.aio.
    """
    max_size = options.grpc_max_message_size
    if options.grpc_stack == "h2" and not tls_enabled(options):
        return await _start_h2(dataplane, options, max_size, regions)
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
    add_guarded_service(server, InferenceRpcs(dataplane, regions), restrictions)
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
        options.grpc_restricted_protocol,
        flag="--grpc-restricted-protocol",
        header_prefix=GRPC_HEADER_PREFIX,
    )


async def _start_h2(
    dataplane: DataPlaneApi,
    options: GrpcOptions,
    max_size: int,
    regions: RegionTable | None,
) -> H2GrpcServer:
    address = f"{options.grpc_host}:{options.grpc_port}"
    try:
        server = await start_h2_grpc(
            dataplane,
            options.grpc_host,
            options.grpc_port,
            _restrictions(options),
            max_size,
            regions=regions,
        )
    except OSError as exc:
        raise ConfigError(f"cannot listen for gRPC on {address}: {exc.strerror or exc}") from None
    logger.info("gRPC service listening on %s:%d (lean HTTP/2 stack)", options.grpc_host, server.port)
    return server


class H2GrpcServer:
    def __init__(self, server: asyncio.Server, connections: set[H2Connection], port: int) -> None:
        self._server = server
        self._connections = connections
        self.port = port

    async def stop(self, grace: float) -> None:
        """GOAWAY to every client, let open calls finish for up to `grace` seconds, then close."""
        self._server.close()
        for connection in list(self._connections):
            connection.go_away()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while any(c.busy for c in self._connections) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for connection in list(self._connections):
            connection.abort()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), timeout=1)


async def start_h2_grpc(
    dataplane: DataPlaneApi,
    host: str,
    port: int,
    restrictions: Restrictions,
    max_message_size: int,
    *,
    regions: RegionTable | None = None,
) -> H2GrpcServer:
    settings = H2Settings(InferenceRpcs(dataplane, regions), restrictions, max_message_size)
    connections: set[H2Connection] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: H2Connection(settings, connections), host, port)
    bound = int(server.sockets[0].getsockname()[1])
    return H2GrpcServer(server, connections, bound)
