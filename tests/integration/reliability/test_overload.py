"""Overload on the real server: beyond the server-wide caps (--max-pending-requests/-bytes) and a
model's max_queue_size, requests are refused at once with 503 / UNAVAILABLE, and the server
serves normally again as soon as the load drops (Triton's L0_model_queue)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from tests.support.models import write_python_model
from tests.support.server import RunningServer, start_server

pytestmark = pytest.mark.integration

DELAY_MS = 400
MAX_PENDING = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo: Path = tmp_path_factory.mktemp("overload")
    write_python_model(repo, "slow", "slow", delay_ms=DELAY_MS, dims=[-1])
    queued = write_python_model(
        repo, "queued", "slow", delay_ms=DELAY_MS, dims=[-1], max_batch_size=1, dynamic_batching=True
    )
    config = text_format.Parse((queued / "config.pbtxt").read_text(), mc.ModelConfig())
    config.dynamic_batching.default_queue_policy.max_queue_size = 1
    (queued / "config.pbtxt").write_text(text_format.MessageToString(config))
    args = (f"--max-pending-requests={MAX_PENDING}", "--max-pending-bytes=4096")
    with start_server(repo, *args) as running:
        yield running


def body(width: int = 4) -> dict[str, object]:
    return {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, width], "data": [1.0] * width}]}


async def burst(url: str, model: str, count: int) -> list[tuple[int, str, float]]:
    """`count` concurrent requests; (status, error message, seconds) of each."""
    async with httpx.AsyncClient(base_url=f"http://{url}", timeout=60) as client:

        async def one() -> tuple[int, str, float]:
            started = time.monotonic()
            answer = await client.post(f"/v2/models/{model}/infer", json=body())
            error = answer.json().get("error", "") if answer.status_code != 200 else ""
            return answer.status_code, error, time.monotonic() - started

        return list(await asyncio.gather(*(one() for _ in range(count))))


def test_beyond_the_server_wide_cap_requests_are_refused_at_once(server: RunningServer) -> None:
    outcomes = asyncio.run(burst(server.http_url, "slow", 10))
    served = [o for o in outcomes if o[0] == 200]
    refused = [o for o in outcomes if o[0] != 200]
    assert len(served) == MAX_PENDING, outcomes
    for status, error, seconds in refused:
        assert status == 503 and "--max-pending-requests" in error, (status, error)
        # A refusal does not wait for the queue: it comes before the last admitted request is served.
        assert seconds < max(served_seconds for _, _, served_seconds in served), outcomes
    # The load is gone: everything is admitted again (gRPC too).
    assert (
        asyncio.run(burst(server.http_url, "slow", MAX_PENDING))
        == [(200, "", pytest.approx(0, abs=60))] * MAX_PENDING
    )


def test_grpc_sees_unavailable_when_overloaded(server: RunningServer) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 4), np.float32))
    results: list[object] = []
    for _ in range(MAX_PENDING + 3):
        client.async_infer("slow", [tensor], lambda result, error: results.append(error or result))
    deadline = time.monotonic() + 30
    while len(results) < MAX_PENDING + 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    errors = [r for r in results if isinstance(r, InferenceServerException)]
    assert len(errors) == 3, results
    assert all(e.status() == "StatusCode.UNAVAILABLE" and "overloaded" in e.message() for e in errors)
    client.close()


def test_a_request_above_the_byte_cap_is_refused(server: RunningServer) -> None:
    answer = httpx.post(f"http://{server.http_url}/v2/models/slow/infer", json=body(2000), timeout=30)
    assert answer.status_code == 503
    assert "--max-pending-bytes" in answer.json()["error"]


def test_a_full_model_queue_is_unavailable(server: RunningServer) -> None:
    # At most one waits (max_queue_size 1) besides the one executing; the rest are refused at once.
    # (Arriving in the same instant, the second may find the first still queued: then one is served.)
    outcomes = asyncio.run(burst(server.http_url, "queued", MAX_PENDING))
    statuses = [status for status, _, _ in outcomes]
    assert 1 <= statuses.count(200) <= 2 and set(statuses) <= {200, 503}, outcomes
    assert any(status == 503 and "Exceeds maximum queue size" in error for status, error, _ in outcomes), (
        outcomes
    )
    assert server.get("/v2/health/ready")[0] == 200


def test_bodies_being_received_count_against_the_byte_cap_and_are_given_back(server: RunningServer) -> None:
    """A slow upload holds its declared bytes: a second one beyond --max-pending-bytes gets 503
    before its body is read; once the first connection goes, the bytes are free again."""
    url = f"http://{server.http_url}/v2/models/slow/infer"
    payload = json.dumps(body(300)).encode()  # ~1.5 KB: two fit in 4096 bytes, three do not
    head = (
        f"POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode()
    holders = []
    try:
        for _ in range(2):
            holder = socket.create_connection(("127.0.0.1", server.http_port), timeout=30)
            holder.sendall(head + payload[: len(payload) - 10])  # the body never completes
            holders.append(holder)
        time.sleep(0.5)
        answer = httpx.post(url, content=payload, timeout=30)
        assert answer.status_code == 503 and "--max-pending-bytes" in answer.json()["error"], answer.text
    finally:
        for holder in holders:
            holder.close()
    time.sleep(0.5)
    for _ in range(3):  # every answered or dropped request gives its bytes back (a leak would 503)
        assert httpx.post(url, content=payload, timeout=30).status_code == 200
