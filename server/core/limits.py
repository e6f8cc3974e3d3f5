"""Server-wide admission: a cap on pending inference requests and on the input bytes they hold.

Per-model queues are bounded by `max_queue_size` (dynamic batcher); this cap bounds them all
together, so a flood spread over many models (or over models without a queue limit) cannot grow
the server's memory without end. Beyond either cap a request is refused at once with
`ServerOverloaded` (HTTP 503, gRPC UNAVAILABLE) instead of waiting. A cap of 0 means no cap.

    --max-pending-requests=N   requests admitted and not yet answered (default 8192)
    --max-pending-bytes=N      their input tensor bytes (default 1 GiB)

A single request larger than --max-pending-bytes is refused even when the server is idle.
"""

from __future__ import annotations

from server.errors import ServerOverloaded
from server.options import DEFAULT_MAX_PENDING_BYTES, DEFAULT_MAX_PENDING_REQUESTS
from server.vocabulary.types import InferenceRequest


def input_bytes(request: InferenceRequest) -> int:
    total = 0
    for tensor in request.inputs:
        data = tensor.data
        total += data.nbytes if isinstance(data, memoryview) else len(data)
    return total


class PendingLimits:
    """Counts what is admitted; `admit` raises ServerOverloaded beyond a cap, `release` gives back."""

    def __init__(
        self, max_requests: int = DEFAULT_MAX_PENDING_REQUESTS, max_bytes: int = DEFAULT_MAX_PENDING_BYTES
    ):
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.requests = 0
        self.bytes = 0
        self.refused = 0  # requests turned away so far (for logs and tests)

    def admit(self, request: InferenceRequest) -> int:
        """Admit one request; returns the byte count to hand back to `release`."""
        size = input_bytes(request)
        if self.max_requests and self.requests >= self.max_requests:
            self.refused += 1
            raise ServerOverloaded(
                f"Server overloaded: {self.requests} inference requests are pending, the maximum is "
                f"{self.max_requests} (--max-pending-requests); retry later"
            )
        if self.max_bytes and self.bytes + size > self.max_bytes:
            self.refused += 1
            raise ServerOverloaded(
                f"Server overloaded: pending requests hold {self.bytes} input bytes, this one brings "
                f"{size} more, the maximum is {self.max_bytes} (--max-pending-bytes); retry later"
            )
        self.requests += 1
        self.bytes += size
        return size

    def release(self, size: int) -> None:
        self.requests -= 1
        self.bytes -= size
