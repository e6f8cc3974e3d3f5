"""Batch forming for the dynamic batcher: queues, priorities, queue policies, batch decisions.

Pure logic with the clock passed in, so every rule is unit-tested without processes or sleeps;
dynamic_batcher.py drives it from the event loop. The rules follow Triton's dynamic batcher
(docs/user_guide/batcher.md, model_config.proto `ModelDynamicBatching`):

- rows, not requests, count toward `max_batch_size`; a request never splits across batches;
- a batch that reaches a `preferred_batch_size` goes at once; otherwise the pending batch waits up to
  `max_queue_delay_microseconds` (counted from its oldest request) for more rows, then goes as it is;
  with no delay it goes at once. No preferred sizes means `[max_batch_size]`, as Triton fills in;
- lower priority numbers are served first (1 is the highest); 0 or an unknown level means
  `default_priority_level`; each level has its own queue policy (`priority_queue_policy`, else
  `default_queue_policy`): `max_queue_size` rejects new requests with "Exceeds maximum queue size",
  a request queued longer than its timeout is rejected (REJECT) or moved behind the level's other
  requests (DELAY, where it waits for a free slot without a timeout);
- a request's `timeout` parameter (µs) applies only with `allow_timeout_override` and may only shorten
  the default (a default of 0 means no timeout, so any request timeout is shorter);
- requests whose inputs differ on variable dims are never batched together unless the input allows
  ragged batching; shape tensors must also be equal in content; with optional inputs, only requests
  with the same set of inputs go together. The batch is a prefix of the queue order: the first
  request that does not fit ends the batch (Triton does the same, which keeps FIFO fairness).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from server.errors import QueueFull
from server.vocabulary.types import InferenceRequest

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2

QUEUE_FULL_MESSAGE = "Exceeds maximum queue size"
TIMEOUT_MESSAGE = "Request timeout expired"


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """One priority level's `ModelQueuePolicy`."""

    max_queue_size: int = 0
    default_timeout_us: int = 0
    allow_timeout_override: bool = False
    delay_on_timeout: bool = False  # timeout_action DELAY (else REJECT)

    @classmethod
    def from_proto(cls, policy: model_config_pb2.ModelQueuePolicy) -> QueuePolicy:
        return cls(
            max_queue_size=policy.max_queue_size,
            default_timeout_us=policy.default_timeout_microseconds,
            allow_timeout_override=policy.allow_timeout_override,
            delay_on_timeout=policy.timeout_action == 1,  # ModelQueuePolicy.DELAY
        )

    def timeout_us(self, requested_us: int) -> int:
        """The timeout a request gets; 0 means none."""
        shorter = self.default_timeout_us == 0 or requested_us < self.default_timeout_us
        if self.allow_timeout_override and requested_us > 0 and shorter:
            return requested_us
        return self.default_timeout_us


@dataclass(frozen=True, slots=True)
class BatchingPolicy:
    """Everything batch forming needs from a model config, resolved once per model version."""

    max_batch_size: int = 1
    has_batch_dim: bool = True  # config max_batch_size > 0: inputs carry a leading batch dimension
    preferred_batch_sizes: frozenset[int] = frozenset()
    max_queue_delay_ns: int = 0
    preserve_ordering: bool = False
    priority_levels: int = 0
    default_priority_level: int = 0
    default_queue_policy: QueuePolicy = QueuePolicy()
    level_policies: dict[int, QueuePolicy] = field(default_factory=dict)
    # Inputs whose shapes must match within a batch, and those (shape tensors) whose bytes must too.
    equal_shape_inputs: frozenset[str] = frozenset()
    equal_content_inputs: frozenset[str] = frozenset()
    has_optional_inputs: bool = False

    @property
    def max_preferred_batch_size(self) -> int:
        return max(self.preferred_batch_sizes, default=self.max_batch_size)

    @property
    def levels(self) -> list[int]:
        return [0] if self.priority_levels == 0 else list(range(1, self.priority_levels + 1))

    def policy_for(self, level: int) -> QueuePolicy:
        return self.level_policies.get(level, self.default_queue_policy)

    def level_for(self, priority: int) -> int:
        """Triton's rule: 0 or a level beyond priority_levels means the default level."""
        if priority <= 0 or priority > self.priority_levels:
            return self.default_priority_level if self.priority_levels else 0
        return priority

    @classmethod
    def from_config(cls, config: model_config_pb2.ModelConfig) -> BatchingPolicy:
        batching = config.dynamic_batching
        max_batch_size = max(1, config.max_batch_size)
        preferred = frozenset(size for size in batching.preferred_batch_size if size > 0)
        equal_shape: set[str] = set()
        equal_content: set[str] = set()
        for model_input in config.input:
            if model_input.is_shape_tensor:
                equal_shape.add(model_input.name)
                equal_content.add(model_input.name)
            elif not model_input.allow_ragged_batch and any(dim < 0 for dim in model_input.dims):
                equal_shape.add(model_input.name)
        return cls(
            max_batch_size=max_batch_size,
            has_batch_dim=config.max_batch_size > 0,
            preferred_batch_sizes=preferred or frozenset({max_batch_size}),
            max_queue_delay_ns=batching.max_queue_delay_microseconds * 1000,
            preserve_ordering=batching.preserve_ordering,
            priority_levels=batching.priority_levels,
            default_priority_level=batching.default_priority_level,
            default_queue_policy=QueuePolicy.from_proto(batching.default_queue_policy),
            level_policies={
                int(level): QueuePolicy.from_proto(policy)
                for level, policy in batching.priority_queue_policy.items()
            },
            equal_shape_inputs=frozenset(equal_shape),
            equal_content_inputs=frozenset(equal_content),
            has_optional_inputs=any(model_input.optional for model_input in config.input),
        )


class ItemState(Enum):
    QUEUED = "queued"
    DELAYED = "delayed"  # timed out under DELAY: behind its level's queue, no timeout any more
    DISPATCHED = "dispatched"
    REMOVED = "removed"  # rejected on timeout or cancelled


@dataclass(eq=False, slots=True)
class QueuedRequest:
    """A request waiting in the queue; `waiter` is the dispatcher's handle (a future)."""

    request: InferenceRequest
    rows: int
    level: int
    enqueue_ns: int
    deadline_ns: int = 0  # 0 = no timeout
    waiter: Any = None
    state: ItemState = ItemState.QUEUED


@dataclass(slots=True)
class BatchDecision:
    """Either a batch to run now, or how long to wait before looking again (None: queue empty)."""

    batch: list[QueuedRequest] = field(default_factory=list)
    wait_ns: int | None = None


def request_priority(request: InferenceRequest) -> int:
    return _int_parameter(request, "priority")


def request_timeout_us(request: InferenceRequest) -> int:
    return _int_parameter(request, "timeout")


def _int_parameter(request: InferenceRequest, name: str) -> int:
    value = request.parameters.get(name)
    if value is None or isinstance(value, bool):
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


class _LevelQueue:
    __slots__ = ("delayed", "main", "policy")

    def __init__(self, policy: QueuePolicy) -> None:
        self.policy = policy
        self.main: deque[QueuedRequest] = deque()
        self.delayed: deque[QueuedRequest] = deque()

    def __len__(self) -> int:
        return len(self.main) + len(self.delayed)


class RequestQueue:
    """The queue of one model version: one FIFO per priority level, plus its delayed requests."""

    def __init__(self, policy: BatchingPolicy) -> None:
        self.policy = policy
        self._levels = {level: _LevelQueue(policy.policy_for(level)) for level in policy.levels}
        self._order = [self._levels[level] for level in sorted(self._levels)]
        self._deadlines: list[tuple[int, int, QueuedRequest]] = []  # heap; stale entries skipped
        self._tiebreak = itertools.count()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def enqueue(self, request: InferenceRequest, now_ns: int, waiter: Any = None) -> QueuedRequest:
        """Queue a request under its priority level; raises QueueFull at the level's max_queue_size."""
        level = self.policy.level_for(request_priority(request))
        queue = self._levels[level]
        if queue.policy.max_queue_size and len(queue) >= queue.policy.max_queue_size:
            # Triton's words, with its request-id prefix.
            raise QueueFull(f"[request id: {request.id or '<id_unknown>'}] {QUEUE_FULL_MESSAGE}")
        timeout_us = queue.policy.timeout_us(request_timeout_us(request))
        item = QueuedRequest(
            request=request,
            rows=request.batch_rows(1 if self.policy.has_batch_dim else 0),
            level=level,
            enqueue_ns=now_ns,
            deadline_ns=now_ns + timeout_us * 1000 if timeout_us else 0,
            waiter=waiter,
        )
        queue.main.append(item)
        self._size += 1
        if item.deadline_ns:
            heapq.heappush(self._deadlines, (item.deadline_ns, next(self._tiebreak), item))
        return item

    def remove(self, item: QueuedRequest) -> bool:
        """Take a still-queued request out (its client went away); False if it already left."""
        if item.state not in (ItemState.QUEUED, ItemState.DELAYED):
            return False
        queue = self._levels[item.level]
        (queue.main if item.state is ItemState.QUEUED else queue.delayed).remove(item)
        item.state = ItemState.REMOVED
        self._size -= 1
        return True

    def next_deadline_ns(self) -> int:
        """The earliest timeout still pending (0 when none)."""
        while self._deadlines and self._deadlines[0][2].state is not ItemState.QUEUED:
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else 0

    def expire(self, now_ns: int) -> list[QueuedRequest]:
        """Apply timeouts at `now_ns`: DELAY moves requests back, REJECT removes and returns them."""
        rejected: list[QueuedRequest] = []
        while self._deadlines and self._deadlines[0][0] < now_ns:
            _, _, item = heapq.heappop(self._deadlines)
            if item.state is not ItemState.QUEUED:
                continue
            queue = self._levels[item.level]
            queue.main.remove(item)
            if queue.policy.delay_on_timeout:
                item.state = ItemState.DELAYED
                queue.delayed.append(item)
            else:
                item.state = ItemState.REMOVED
                self._size -= 1
                rejected.append(item)
        return rejected

    def drain(self) -> list[QueuedRequest]:
        """Remove and return every queued request (the scheduler is stopping)."""
        items = list(self._in_order())
        for item in items:
            self.remove(item)
        return items

    def _in_order(self) -> Iterator[QueuedRequest]:
        for queue in self._order:
            yield from queue.main
            yield from queue.delayed

    def _signature(self, request: InferenceRequest) -> tuple[Any, ...] | None:
        policy = self.policy
        if not policy.equal_shape_inputs and not policy.has_optional_inputs:
            return None
        parts: list[Any] = []
        for tensor in request.inputs:
            if tensor.name in policy.equal_shape_inputs:
                # The batch dimension may differ; the rest must not.
                dims = tensor.shape[1:] if policy.has_batch_dim else tensor.shape
                content = bytes(tensor.data) if tensor.name in policy.equal_content_inputs else b""
                parts.append((tensor.name, tuple(dims), content))
            elif policy.has_optional_inputs:
                parts.append((tensor.name,))
        return tuple(sorted(parts))

    def form_batch(self, now_ns: int) -> BatchDecision:
        """Decide, with an instance free, what to run now (or how long to wait for more rows)."""
        policy = self.policy
        max_preferred = policy.max_preferred_batch_size
        rows = count = best_count = 0
        oldest_ns = now_ns
        cannot_grow = False
        signature: tuple[Any, ...] | None = None
        for item in self._in_order():
            if count == 0:
                signature = self._signature(item.request)
            else:
                if best_count == 0 and rows + item.rows > max_preferred:
                    # Growing past every preferred size: this is the batch to send if no delay runs out.
                    best_count = count
                if rows + item.rows > policy.max_batch_size or (
                    signature is not None and self._signature(item.request) != signature
                ):
                    cannot_grow = True
                    break
            rows += item.rows
            count += 1
            oldest_ns = min(oldest_ns, item.enqueue_ns)
            if rows in policy.preferred_batch_sizes:
                best_count = count
        if count == 0:
            return BatchDecision(wait_ns=None)
        waited_ns = now_ns - oldest_ns
        delay_ns = policy.max_queue_delay_ns
        delay_exceeded = delay_ns != 0 and waited_ns >= delay_ns
        if best_count and not delay_exceeded:
            return BatchDecision(batch=self._take(best_count))
        if cannot_grow or rows >= max_preferred or delay_ns == 0 or delay_exceeded:
            return BatchDecision(batch=self._take(count))
        return BatchDecision(wait_ns=delay_ns - waited_ns)

    def _take(self, count: int) -> list[QueuedRequest]:
        batch: list[QueuedRequest] = []
        for queue in self._order:
            for source in (queue.main, queue.delayed):
                while source and len(batch) < count:
                    item = source.popleft()
                    item.state = ItemState.DISPATCHED
                    batch.append(item)
            if len(batch) == count:
                break
        self._size -= len(batch)
        return batch
