from __future__ import annotations

from tritonclient.grpc import service_pb2

from server.core.stats import ModelStats, statistics_response


def test_success_failure_and_executions_land_in_tritons_shape() -> None:
    stats = ModelStats()
    for _ in range(3):
        stats.record_success(
            request_ns=100, queue_ns=10, compute_input_ns=1, compute_infer_ns=50, compute_output_ns=2
        )
    stats.record_failure(request_ns=7, reason="REJECTED")
    stats.record_execution(batch_size=2, compute_input_ns=1, compute_infer_ns=50, compute_output_ns=2)
    stats.record_execution(batch_size=1, compute_input_ns=3, compute_infer_ns=40, compute_output_ns=4)
    stats.record_execution(batch_size=2, compute_input_ns=1, compute_infer_ns=60, compute_output_ns=2)

    message = stats.to_proto("m", "1")

    assert isinstance(message, service_pb2.ModelStatistics)
    assert (message.name, message.version) == ("m", "1")
    assert message.inference_count == 5
    assert message.execution_count == 3
    assert message.last_inference > 1_600_000_000_000  # ms since the epoch
    inference = message.inference_stats
    assert (inference.success.count, inference.success.ns) == (3, 300)
    assert (inference.fail.count, inference.fail.ns) == (1, 7)
    assert (inference.queue.count, inference.queue.ns) == (3, 30)
    assert (inference.compute_infer.count, inference.compute_infer.ns) == (3, 150)
    assert [b.batch_size for b in message.batch_stats] == [1, 2]
    two = message.batch_stats[1]
    assert (two.compute_infer.count, two.compute_infer.ns) == (2, 110)
    assert (two.compute_input.count, two.compute_output.ns) == (2, 4)


def test_failure_reasons_are_counted_and_unknown_ones_become_other() -> None:
    stats = ModelStats()
    stats.record_failure(request_ns=1, reason="BACKEND")
    stats.record_failure(request_ns=1, reason="nonsense")
    assert stats.failures_by_reason == {"REJECTED": 0, "CANCELED": 0, "BACKEND": 1, "OTHER": 1}


def test_fresh_stats_have_no_last_inference_and_response_lists_versions() -> None:
    a, b = ModelStats(), ModelStats()
    b.record_execution(batch_size=4, compute_input_ns=0, compute_infer_ns=0, compute_output_ns=0)
    response = statistics_response([("a", "1", a), ("b", "2", b)])
    assert [(s.name, s.version) for s in response.model_stats] == [("a", "1"), ("b", "2")]
    assert response.model_stats[0].last_inference == 0
    assert b.batch_sizes == {4: 1}


def test_successes_of_one_batch_count_like_single_successes() -> None:
    one_by_one, batched = ModelStats(), ModelStats()
    for request_ns, queue_ns in ((100, 10), (120, 30), (90, 5)):
        one_by_one.record_success(
            request_ns=request_ns,
            queue_ns=queue_ns,
            compute_input_ns=1,
            compute_infer_ns=50,
            compute_output_ns=2,
        )
    batched.record_successes(
        3,
        request_ns_total=310,
        queue_ns_total=45,
        compute_input_ns=1,
        compute_infer_ns=50,
        compute_output_ns=2,
    )
    assert one_by_one.to_proto("m", "1") == batched.to_proto("m", "1")
