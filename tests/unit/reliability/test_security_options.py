"""The reliability and security flags through parse_tritonserver_args and ServerOptions.check."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.errors import ConfigError
from server.options import ServerOptions, parse_tritonserver_args


def parse(*flags: str) -> ServerOptions:
    return parse_tritonserver_args(["--model-repository=/m", *flags])


def test_defaults_bound_the_server() -> None:
    options = parse()
    assert options.max_pending_requests == 8192
    assert options.max_pending_bytes == 1 << 30
    assert options.grpc_max_message_size == (1 << 31) - 1
    assert not options.grpc_use_ssl and not options.http_restricted_api


def test_triton_spellings_are_taken() -> None:
    options = parse(
        "--http-restricted-api=model-repository,statistics:admin-key=s3cret",
        "--http-restricted-api=inference:k=v",
        "--grpc-restricted-protocol=model-repository:admin-key=s3cret",
        "--grpc-use-ssl-mutual=true",
        "--grpc-server-cert=s.crt",
        "--grpc-server-key=s.key",
        "--grpc-root-cert=ca.crt",
        "--max-pending-requests=10",
        "--max-pending-bytes=0",
        "--grpc-max-message-size=1024",
    )
    assert options.http_restricted_api == ["model-repository,statistics:admin-key=s3cret", "inference:k=v"]
    assert options.grpc_restricted_protocol == ["model-repository:admin-key=s3cret"]
    assert options.grpc_use_ssl and options.grpc_use_ssl_mutual  # mutual implies TLS, as in Triton
    assert (options.grpc_server_cert, options.grpc_root_cert) == (Path("s.crt"), Path("ca.crt"))
    assert (options.max_pending_requests, options.max_pending_bytes) == (10, 0)
    assert options.grpc_max_message_size == 1024
    assert not options.warnings


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--http-restricted-api=nothing:k=v"], "unknown restricted api 'nothing'"),
        (["--grpc-restricted-protocol=health"], "must look like"),
        (["--grpc-restricted-protocol=health:k=v,w", "--grpc-restricted-protocol=health:x=y"], "multiple"),
        (["--grpc-use-ssl=true", "--grpc-server-cert=c"], "needs --grpc-server-cert and --grpc-server-key"),
        (["--grpc-use-ssl-mutual=true", "--grpc-server-cert=c", "--grpc-server-key=k"], "--grpc-root-cert"),
        (["--max-pending-requests=-1"], "--max-pending-requests must be 0"),
        (["--grpc-max-message-size=0"], "--grpc-max-message-size must be within"),
    ],
)
def test_unusable_values_are_refused(flags: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(*flags)
