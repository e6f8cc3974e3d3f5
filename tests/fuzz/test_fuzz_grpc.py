"""gRPC fuzzing against the real server (short, deterministic run; `make fuzz` runs 100k+).

Every call must be answered, never with INTERNAL / UNKNOWN, and the server must stay live."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from hypothesis import given

from tests.fuzz.common import SHORT
from tests.fuzz.grpc_cases import GrpcCase, call, check, grpc_cases
from tests.support.server import RunningServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["grpcio", "h2"])
def target(request: pytest.FixtureRequest) -> Iterator[tuple[RunningServer, grpc.Channel]]:
    """A fuzz server per gRPC stack (grpc.aio, lean HTTP/2), with one channel to it."""
    server: RunningServer = request.getfixturevalue(
        "fuzz_server" if request.param == "grpcio" else "fuzz_server_h2"
    )
    with grpc.insecure_channel(server.grpc_url) as opened:
        yield server, opened


@SHORT
@given(case=grpc_cases())
def test_grpc_calls_never_fail_internally_or_kill_the_server(
    target: tuple[RunningServer, grpc.Channel], case: GrpcCase
) -> None:
    server, channel = target
    check(case, call(channel, case))
    assert server.process.poll() is None, server.log[-3000:]


def test_the_server_is_still_healthy_after_fuzzing(target: tuple[RunningServer, grpc.Channel]) -> None:
    assert target[0].get("/v2/health/ready")[0] == 200
