"""The server-wide cap on pending requests and bytes."""

from __future__ import annotations

import pytest

from server.core.limits import PendingLimits, input_bytes
from server.errors import ServerOverloaded
from server.vocabulary.types import InferenceRequest, Tensor


def request(size: int) -> InferenceRequest:
    data = memoryview(bytearray(size))
    return InferenceRequest("m", "", [Tensor("A", "UINT8", [size], data), Tensor("B", "UINT8", [1], b"x")])


def test_input_bytes_counts_every_tensor() -> None:
    assert input_bytes(request(10)) == 11


def test_request_cap() -> None:
    limits = PendingLimits(max_requests=2, max_bytes=0)
    sizes = [limits.admit(request(1)), limits.admit(request(1))]
    with pytest.raises(ServerOverloaded, match="--max-pending-requests"):
        limits.admit(request(1))
    limits.release(sizes.pop())
    limits.admit(request(1))
    assert limits.requests == 2 and limits.refused == 1


def test_byte_cap_and_release() -> None:
    limits = PendingLimits(max_requests=0, max_bytes=100)
    first = limits.admit(request(59))
    with pytest.raises(ServerOverloaded, match="--max-pending-bytes"):
        limits.admit(request(59))
    limits.release(first)
    assert limits.bytes == 0 and limits.requests == 0
    with pytest.raises(ServerOverloaded):
        limits.admit(request(100))  # larger than the cap on its own


def test_zero_means_no_cap() -> None:
    limits = PendingLimits(0, 0)
    for _ in range(1000):
        limits.admit(request(1 << 10))
    assert limits.requests == 1000
