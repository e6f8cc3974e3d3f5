"""Per model version statistics in the shape of Triton's statistics extension.

Schedulers record into a `ModelStats` on the hot path: plain int attribute updates, no locks (the main
process runs one asyncio thread), no protobuf. `to_proto` builds tritonclient's
`service_pb2.ModelStatistics` only when `…/stats` is asked for, and server/metrics.py reads the same
attributes at scrape time, so neither costs anything per request.

Triton's meaning of the numbers (docs/protocol/extension_statistics.md):
- `inference_stats.success/fail`: count of requests and their total end-to-end duration (ns). As in
  Triton 2.51, `fail` counts only requests the model's execution failed (execute raised, instance
  crashed) or the scheduler dropped (timeout, cancellation): requests refused before the scheduler
  (bad input, unknown version, full queue) count nowhere, and an error response the model returned
  from execute() counts as a success;
- `queue`, `compute_input/infer/output`: per successful request, count and cumulative ns;
- `inference_count`: rows executed (a batch of 8 rows counts 8); `execution_count`: executions;
- `batch_stats`: per executed batch size, the execution's compute input/infer/output (count, ns);
- `last_inference`: ms since the epoch of the last execution;
- `cache_hit` / `cache_miss` (response cache, server/core/response_cache.py): a hit is a successful
  request with its queue count, never an execution nor a compute count (compute_* counts are
  `success - cache_hit`, as in Triton); its duration is the lookup's, a miss's the lookup's plus
  the insertion's.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tritonclient.grpc import service_pb2

#: Triton's `reason` label values of nv_inference_request_failure.
FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")


class ModelStats:
    """Cumulative counters of one model version; every duration is in nanoseconds."""

    __slots__ = (
        "_batches",
        "cache_enabled",
        "cache_hit_count",
        "cache_hit_ns",
        "cache_miss_count",
        "cache_miss_ns",
        "compute_infer_ns",
        "compute_input_ns",
        "compute_output_ns",
        "execution_count",
        "fail_count",
        "fail_ns",
        "failures_by_reason",
        "inference_count",
        "last_inference_ms",
        "load_duration_secs",
        "queue_ns",
        "success_count",
        "success_ns",
    )

    def __init__(self) -> None:
        self.success_count = 0
        self.success_ns = 0
        self.fail_count = 0
        self.fail_ns = 0
        self.failures_by_reason: dict[str, int] = dict.fromkeys(FAILURE_REASONS, 0)
        # queue and compute_* per successful request: their counts equal success_count.
        self.queue_ns = 0
        self.compute_input_ns = 0
        self.compute_infer_ns = 0
        self.compute_output_ns = 0
        self.inference_count = 0
        self.execution_count = 0
        self.last_inference_ms = 0
        self.load_duration_secs = 0.0
        self.cache_enabled = False  # the version answers from the response cache (metrics show it)
        self.cache_hit_count = 0
        self.cache_hit_ns = 0
        self.cache_miss_count = 0
        self.cache_miss_ns = 0
        # batch size -> [executions, compute_input_ns, compute_infer_ns, compute_output_ns]
        self._batches: dict[int, list[int]] = {}

    def record_success(
        self,
        *,
        request_ns: int,
        queue_ns: int,
        compute_input_ns: int,
        compute_infer_ns: int,
        compute_output_ns: int,
    ) -> None:
        """One request answered: its end-to-end time, its wait in the queue, its share of compute."""
        self.success_count += 1
        self.success_ns += request_ns
        self.queue_ns += queue_ns
        self.compute_input_ns += compute_input_ns
        self.compute_infer_ns += compute_infer_ns
        self.compute_output_ns += compute_output_ns

    def record_successes(
        self,
        count: int,
        *,
        request_ns_total: int,
        queue_ns_total: int,
        compute_input_ns: int,
        compute_infer_ns: int,
        compute_output_ns: int,
    ) -> None:
        """`count` requests answered by one execution, in one call (the batcher's hot path).

        request/queue times are the sums over the requests; compute_* are the execution's, charged
        to every request of the batch as Triton does.
        """
        self.success_count += count
        self.success_ns += request_ns_total
        self.queue_ns += queue_ns_total
        self.compute_input_ns += compute_input_ns * count
        self.compute_infer_ns += compute_infer_ns * count
        self.compute_output_ns += compute_output_ns * count

    def record_failure(self, *, request_ns: int, reason: str) -> None:
        """One request failed; reason is one of REJECTED, CANCELED, BACKEND, OTHER."""
        self.fail_count += 1
        self.fail_ns += request_ns
        if reason not in self.failures_by_reason:
            reason = "OTHER"
        self.failures_by_reason[reason] += 1

    def record_execution(
        self,
        *,
        batch_size: int,
        compute_input_ns: int,
        compute_infer_ns: int,
        compute_output_ns: int,
        inferences: int | None = None,
    ) -> None:
        """One execution of `batch_size` rows on an instance (also sets last_inference, like Triton).

        `inferences` (default: batch_size) is what inference_count grows by: Triton 2.51 counts the
        rows of successful requests only, so an execution whose execute() raised passes 0 (it still
        counts as an execution and in batch_stats).
        """
        self.inference_count += batch_size if inferences is None else inferences
        self.execution_count += 1
        self.last_inference_ms = time.time_ns() // 1_000_000
        entry = self._batches.get(batch_size)
        if entry is None:
            self._batches[batch_size] = [1, compute_input_ns, compute_infer_ns, compute_output_ns]
        else:
            entry[0] += 1
            entry[1] += compute_input_ns
            entry[2] += compute_infer_ns
            entry[3] += compute_output_ns

    def record_cache_hit(self, *, request_ns: int, lookup_ns: int) -> None:
        """One request answered from the response cache: a success, not an execution."""
        self.success_count += 1
        self.success_ns += request_ns
        self.cache_hit_count += 1
        self.cache_hit_ns += lookup_ns

    def record_cache_miss(self, lookup_ns: int) -> None:
        """One lookup that missed (the insertion of its answer adds to cache_miss_ns later)."""
        self.cache_miss_count += 1
        self.cache_miss_ns += lookup_ns

    def record_load(self, seconds: float) -> None:
        """How long loading this version took (nv_model_load_duration_secs)."""
        self.load_duration_secs = seconds

    @property
    def batch_sizes(self) -> dict[int, int]:
        """Executions per batch size (a copy)."""
        return {size: entry[0] for size, entry in sorted(self._batches.items())}

    def to_proto(self, name: str, version: str) -> service_pb2.ModelStatistics:
        """The statistics extension's ModelStatistics message for this version."""
        from tritonclient.grpc import service_pb2

        message = service_pb2.ModelStatistics(
            name=name,
            version=version,
            last_inference=self.last_inference_ms,
            inference_count=self.inference_count,
            execution_count=self.execution_count,
        )
        stats = message.inference_stats
        stats.success.count, stats.success.ns = self.success_count, self.success_ns
        stats.fail.count, stats.fail.ns = self.fail_count, self.fail_ns
        stats.queue.count, stats.queue.ns = self.success_count, self.queue_ns
        executed = self.success_count - self.cache_hit_count  # hits have no compute times
        for duration, ns in (
            (stats.compute_input, self.compute_input_ns),
            (stats.compute_infer, self.compute_infer_ns),
            (stats.compute_output, self.compute_output_ns),
        ):
            duration.count = executed
            duration.ns = ns
        stats.cache_hit.count, stats.cache_hit.ns = self.cache_hit_count, self.cache_hit_ns
        stats.cache_miss.count, stats.cache_miss.ns = self.cache_miss_count, self.cache_miss_ns
        for size, (count, input_ns, infer_ns, output_ns) in sorted(self._batches.items()):
            batch = message.batch_stats.add(batch_size=size)
            batch.compute_input.count, batch.compute_input.ns = count, input_ns
            batch.compute_infer.count, batch.compute_infer.ns = count, infer_ns
            batch.compute_output.count, batch.compute_output.ns = count, output_ns
        return message


@dataclass(frozen=True, slots=True)
class StatsEntry:
    """One loaded model version as the metrics collector sees it at scrape time."""

    model: str
    version: str
    stats: ModelStats
    pending: int


def statistics_response(
    entries: Iterable[tuple[str, str, ModelStats]],
) -> service_pb2.ModelStatisticsResponse:
    """ModelStatisticsResponse for (name, version, stats) triples, in the order given."""
    from tritonclient.grpc import service_pb2

    response = service_pb2.ModelStatisticsResponse()
    for name, version, stats in entries:
        response.model_stats.append(stats.to_proto(name, version))
    return response
