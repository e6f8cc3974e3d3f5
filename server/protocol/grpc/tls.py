"""TLS for the gRPC front end, with Triton's flags.

    --grpc-use-ssl=true --grpc-server-cert=server.crt --grpc-server-key=server.key
    --grpc-use-ssl-mutual=true --grpc-root-cert=ca.crt     # also verify client certificates

`--grpc-use-ssl-mutual` implies `--grpc-use-ssl` (as in Triton) and needs `--grpc-root-cert`, the
CA that client certificates must chain to. Files are read once at start-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import grpc

from server.errors import ConfigError


class TlsOptions(Protocol):
    """The ServerOptions fields TLS reads."""

    @property
    def grpc_use_ssl(self) -> bool: ...
    @property
    def grpc_use_ssl_mutual(self) -> bool: ...
    @property
    def grpc_server_cert(self) -> Path | None: ...
    @property
    def grpc_server_key(self) -> Path | None: ...
    @property
    def grpc_root_cert(self) -> Path | None: ...


def _read(path: Any, flag: str) -> bytes:
    if not path:
        raise ConfigError(f"{flag} is required when gRPC TLS is enabled (--grpc-use-ssl)")
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{flag}: cannot read '{path}': {exc.strerror or exc}") from None
    if b"-----BEGIN" not in data:
        raise ConfigError(f"{flag}: '{path}' is not a PEM file")
    return data


def tls_enabled(options: TlsOptions) -> bool:
    return options.grpc_use_ssl or options.grpc_use_ssl_mutual


def server_credentials(options: TlsOptions) -> grpc.ServerCredentials | None:
    """Credentials for `add_secure_port`, or None when TLS is off; ConfigError on bad files."""
    if not tls_enabled(options):
        return None
    mutual = options.grpc_use_ssl_mutual
    cert = _read(options.grpc_server_cert, "--grpc-server-cert")
    key = _read(options.grpc_server_key, "--grpc-server-key")
    root_path = options.grpc_root_cert
    if mutual and not root_path:
        raise ConfigError(
            "--grpc-use-ssl-mutual needs --grpc-root-cert (the CA client certificates chain to)"
        )
    root = _read(root_path, "--grpc-root-cert") if root_path else None
    try:
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=root, require_client_auth=mutual)
    except Exception as exc:  # grpc rejects unusable PEM data here
        raise ConfigError(f"gRPC TLS: the certificate or key cannot be used: {exc}") from None
