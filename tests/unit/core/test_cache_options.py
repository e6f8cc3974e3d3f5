"""--cache-config local,size=N and Triton's deprecated --response-cache-byte-size."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.errors import ConfigError
from server.options import parse_tritonserver_args

REPO = "--model-repository=/models"


def test_local_cache_size() -> None:
    assert (
        parse_tritonserver_args([REPO, "--cache-config=local,size=1048576"]).response_cache_byte_size
        == 1048576
    )
    assert (
        parse_tritonserver_args([REPO, "--cache-config", "local,size=4096"]).response_cache_byte_size == 4096
    )


def test_deprecated_byte_size_flag() -> None:
    options = parse_tritonserver_args([REPO, "--response-cache-byte-size=8192"])
    assert options.response_cache_byte_size == 8192
    assert not options.warnings  # no longer "has no effect"
    assert parse_tritonserver_args([REPO, "--response-cache-byte-size=0"]).response_cache_byte_size == 0


def test_no_cache_by_default() -> None:
    assert parse_tritonserver_args([REPO]).response_cache_byte_size == 0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("redis,host=localhost", "only the local cache"),
        ("local,capacity=10", "takes size=<bytes>"),
        ("local,size=lots", "number of bytes"),
        ("local,size=0", "more than 0"),
    ],
)
def test_refused_cache_configs(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_tritonserver_args([REPO, f"--cache-config={value}"])


def test_negative_byte_size_is_refused() -> None:
    with pytest.raises(ConfigError, match="0 or more"):
        parse_tritonserver_args([REPO, "--response-cache-byte-size=-1"])


def test_tritonctl_serve_takes_the_same_cache_config(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tritonctl.cli.main import app

    result = CliRunner().invoke(
        app, ["serve", "--model-repository", str(tmp_path), "--cache-config", "redis,a=b"]
    )
    assert result.exit_code == 2 and "only the local cache" in result.output
