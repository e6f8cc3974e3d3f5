"""HTTP fuzzing against the real server (short, deterministic run; `make fuzz` runs 100k+).

Every case must get a non-500 answer (or, for mangled bytes, may be left waiting), and the server
must stay live throughout."""

from __future__ import annotations

import pytest
from hypothesis import given

from tests.fuzz.common import SHORT
from tests.fuzz.http_cases import HttpCase, check, http_cases, send
from tests.support.server import RunningServer

pytestmark = pytest.mark.integration


@SHORT
@given(case=http_cases)
def test_http_requests_never_get_a_500_or_kill_the_server(fuzz_server: RunningServer, case: HttpCase) -> None:
    check(case, send(fuzz_server.http_port, case))
    assert fuzz_server.process.poll() is None, fuzz_server.log[-3000:]


def test_the_server_is_still_healthy_after_fuzzing(fuzz_server: RunningServer) -> None:
    assert fuzz_server.get("/v2/health/ready")[0] == 200
    assert fuzz_server.process.poll() is None
