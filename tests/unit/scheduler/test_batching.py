"""Batch forming rules (server/core/scheduler/batching.py) with an explicit clock."""

from __future__ import annotations

import pytest
from scheduler_helpers import model_config, request

from server.core.scheduler.batching import BatchingPolicy, ItemState, RequestQueue
from server.errors import QueueFull

MS = 1_000_000


def queue_for(**kwargs: object) -> RequestQueue:
    return RequestQueue(BatchingPolicy.from_config(model_config(**kwargs)))  # type: ignore[arg-type]


def tags(batch: list) -> list[str]:  # type: ignore[type-arg]
    return [item.request.id for item in batch]


def test_rows_not_requests_count_toward_max_batch_size() -> None:
    queue = queue_for(max_batch_size=8)
    for tag in range(3):
        queue.enqueue(request(3, tag=tag), now_ns=0)
    first = queue.form_batch(now_ns=0)
    assert tags(first.batch) == ["0", "1"]  # 6 rows; a third request would make 9
    assert sum(item.rows for item in first.batch) == 6
    assert tags(queue.form_batch(now_ns=0).batch) == ["2"]
    assert len(queue) == 0


def test_preferred_size_goes_at_once_and_the_rest_waits_for_the_delay() -> None:
    queue = queue_for(preferred_batch_size=[2, 4], max_queue_delay_microseconds=1000)
    for tag in range(3):
        queue.enqueue(request(tag=tag), now_ns=0)
    assert tags(queue.form_batch(now_ns=0).batch) == ["0", "1"]
    waiting = queue.form_batch(now_ns=10)
    assert waiting.batch == [] and waiting.wait_ns == 1000 * 1000 - 10
    assert tags(queue.form_batch(now_ns=1000 * 1000).batch) == ["2"]


def test_batching_delay_waits_for_more_rows_then_sends_what_it_has() -> None:
    queue = queue_for(preferred_batch_size=[4], max_queue_delay_microseconds=100)
    queue.enqueue(request(tag=1), now_ns=0)
    queue.enqueue(request(tag=2), now_ns=50_000)
    assert queue.form_batch(now_ns=60_000).wait_ns == 40_000  # counted from the oldest request
    queue.enqueue(request(tag=3), now_ns=70_000)
    queue.enqueue(request(tag=4), now_ns=80_000)
    assert tags(queue.form_batch(now_ns=80_000).batch) == ["1", "2", "3", "4"]
    queue.enqueue(request(tag=5), now_ns=200_000)
    assert queue.form_batch(now_ns=250_000).batch == []
    assert tags(queue.form_batch(now_ns=300_000).batch) == ["5"]


def test_without_delay_whatever_is_queued_goes_now() -> None:
    queue = queue_for(preferred_batch_size=[4])
    queue.enqueue(request(tag=1), now_ns=0)
    assert tags(queue.form_batch(now_ns=0).batch) == ["1"]
    assert queue.form_batch(now_ns=0).wait_ns is None  # empty


def test_no_preferred_sizes_means_max_batch_size() -> None:
    policy = BatchingPolicy.from_config(model_config(max_batch_size=16))
    assert policy.preferred_batch_sizes == frozenset({16})
    queue = RequestQueue(policy)
    for tag in range(20):
        queue.enqueue(request(tag=tag), now_ns=0)
    assert len(queue.form_batch(now_ns=0).batch) == 16
    assert len(queue.form_batch(now_ns=0).batch) == 4


def test_lower_priority_number_is_served_first_and_zero_means_default() -> None:
    queue = queue_for(max_batch_size=1, priority_levels=3, default_priority_level=2)
    queue.enqueue(request(tag=1, priority=3), now_ns=0)
    queue.enqueue(request(tag=2), now_ns=1)  # default level 2
    queue.enqueue(request(tag=3, priority=1), now_ns=2)
    queue.enqueue(request(tag=4, priority=0), now_ns=3)  # 0 -> default
    queue.enqueue(request(tag=5, priority=9), now_ns=4)  # beyond the levels -> default
    order = [tags(queue.form_batch(now_ns=5).batch)[0] for _ in range(5)]
    assert order == ["3", "2", "4", "5", "1"]


def test_a_batch_mixes_levels_in_priority_order() -> None:
    queue = queue_for(max_batch_size=4, priority_levels=2, default_priority_level=2)
    queue.enqueue(request(tag=1), now_ns=0)
    queue.enqueue(request(tag=2, priority=1), now_ns=1)
    assert tags(queue.form_batch(now_ns=2).batch) == ["2", "1"]


def test_max_queue_size_rejects_with_tritons_message_per_level() -> None:
    queue = queue_for(
        priority_levels=2,
        default_priority_level=2,
        default_queue_policy={"max_queue_size": 2},
        priority_queue_policy={1: {"max_queue_size": 1}},
    )
    queue.enqueue(request(), now_ns=0)
    queue.enqueue(request(), now_ns=0)
    with pytest.raises(QueueFull, match=r"^\[request id: 0\] Exceeds maximum queue size$"):
        queue.enqueue(request(), now_ns=0)
    queue.enqueue(request(priority=1), now_ns=0)
    with pytest.raises(QueueFull):
        queue.enqueue(request(priority=1), now_ns=0)
    assert len(queue) == 3
    queue.form_batch(now_ns=0)
    queue.enqueue(request(), now_ns=0)  # room again


def test_timeout_reject_removes_expired_requests() -> None:
    queue = queue_for(default_queue_policy={"default_timeout_microseconds": 1000})
    item = queue.enqueue(request(tag=1), now_ns=0)
    queue.enqueue(request(tag=2), now_ns=500 * 1000)
    assert queue.next_deadline_ns() == 1 * MS
    assert queue.expire(now_ns=1 * MS) == []  # not yet: strictly after the deadline
    rejected = queue.expire(now_ns=1 * MS + 1)
    assert rejected == [item] and item.state is ItemState.REMOVED
    assert len(queue) == 1
    assert queue.next_deadline_ns() == 1 * MS + 500 * 1000


def test_timeout_delay_moves_the_request_behind_the_others() -> None:
    queue = queue_for(
        max_batch_size=1,
        default_queue_policy={"timeout_action": 1, "allow_timeout_override": True},
    )
    late = queue.enqueue(request(tag=1, timeout=100), now_ns=0)  # 100 µs
    queue.enqueue(request(tag=2), now_ns=1)
    assert queue.expire(now_ns=200 * 1000) == []
    assert late.state is ItemState.DELAYED
    assert queue.next_deadline_ns() == 0  # a delayed request has no timeout any more
    assert tags(queue.form_batch(now_ns=200 * 1000).batch) == ["2"]
    assert tags(queue.form_batch(now_ns=200 * 1000).batch) == ["1"]


def test_request_timeout_only_with_override_and_only_shorter() -> None:
    locked = queue_for(default_queue_policy={"default_timeout_microseconds": 1000})
    assert locked.enqueue(request(timeout=10), now_ns=0).deadline_ns == 1 * MS
    free = queue_for(
        default_queue_policy={"default_timeout_microseconds": 1000, "allow_timeout_override": True}
    )
    assert free.enqueue(request(timeout=10), now_ns=0).deadline_ns == 10 * 1000
    assert free.enqueue(request(timeout=5000), now_ns=0).deadline_ns == 1 * MS
    unlimited = queue_for(default_queue_policy={"allow_timeout_override": True})
    assert unlimited.enqueue(request(timeout=7), now_ns=0).deadline_ns == 7000
    assert unlimited.enqueue(request(), now_ns=0).deadline_ns == 0


def test_different_variable_dims_are_not_batched_together() -> None:
    queue = queue_for(dims=(-1,))
    queue.enqueue(request(width=3, tag=1), now_ns=0)
    queue.enqueue(request(2, width=3, tag=2), now_ns=0)  # the batch dim may differ
    queue.enqueue(request(width=5, tag=3), now_ns=0)
    queue.enqueue(request(width=3, tag=4), now_ns=0)
    assert tags(queue.form_batch(now_ns=0).batch) == ["1", "2"]  # stops at the first mismatch
    assert tags(queue.form_batch(now_ns=0).batch) == ["3"]
    assert tags(queue.form_batch(now_ns=0).batch) == ["4"]


def test_ragged_inputs_batch_across_shapes() -> None:
    queue = queue_for(dims=(-1,), ragged=True)
    queue.enqueue(request(width=3), now_ns=0)
    queue.enqueue(request(width=5), now_ns=0)
    assert len(queue.form_batch(now_ns=0).batch) == 2


def test_shape_tensors_must_match_in_content() -> None:
    queue = queue_for(shape_tensor=True)
    queue.enqueue(request(tag=1, shape_value=2), now_ns=0)
    queue.enqueue(request(tag=2, shape_value=2), now_ns=0)
    queue.enqueue(request(tag=3, shape_value=3), now_ns=0)
    assert tags(queue.form_batch(now_ns=0).batch) == ["1", "2"]
    assert tags(queue.form_batch(now_ns=0).batch) == ["3"]


def test_requests_with_different_optional_inputs_are_not_batched_together() -> None:
    queue = queue_for(optional_input=True)
    queue.enqueue(request(tag=1), now_ns=0)
    queue.enqueue(request(tag=2, shape_value=1), now_ns=0)
    queue.enqueue(request(tag=3, shape_value=1), now_ns=0)
    assert tags(queue.form_batch(now_ns=0).batch) == ["1"]
    assert tags(queue.form_batch(now_ns=0).batch) == ["2", "3"]


def test_removed_requests_leave_the_queue() -> None:
    queue = queue_for()
    first = queue.enqueue(request(tag=1), now_ns=0)
    queue.enqueue(request(tag=2), now_ns=0)
    assert queue.remove(first) is True
    assert queue.remove(first) is False
    batch = queue.form_batch(now_ns=0).batch
    assert tags(batch) == ["2"]
    assert queue.remove(batch[0]) is False  # already dispatched


def test_models_without_batch_dim_run_one_request_per_batch() -> None:
    queue = queue_for(max_batch_size=0, dims=(1, 4))
    queue.enqueue(request(tag=1), now_ns=0)
    queue.enqueue(request(tag=2), now_ns=0)
    assert tags(queue.form_batch(now_ns=0).batch) == ["1"]
    assert tags(queue.form_batch(now_ns=0).batch) == ["2"]


def test_drain_empties_every_level() -> None:
    queue = queue_for(priority_levels=2, default_priority_level=1)
    queue.enqueue(request(tag=1, priority=2), now_ns=0)
    queue.enqueue(request(tag=2), now_ns=0)
    assert tags(queue.drain()) == ["2", "1"]
    assert len(queue) == 0
