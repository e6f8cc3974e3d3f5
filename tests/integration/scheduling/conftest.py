"""One real server for the scheduling tests, with a toy model per behaviour under test.

The queueing models are gated (tests/support/events.py): their executions are held until the test
releases them, so a test knows a request is executing, or queued behind it, instead of guessing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from tests.support.events import Gate, write_gated_model
from tests.support.models import write_python_model
from tests.support.server import RunningServer, start_server

GATED = ("tiny_queue", "prioritized", "reject_late", "delay_late", "cancellable")


def patch_config(model_dir: Path, text: str) -> None:
    """Merge config.pbtxt text (queue policies, warmup...) into a toy model's config."""
    path = model_dir / "config.pbtxt"
    config = text_format.Parse(path.read_text(), mc.ModelConfig())
    text_format.Merge(text, config)
    path.write_text(text_format.MessageToString(config))


def write_scheduling_models(repo: Path, gates: dict[str, Gate]) -> None:
    # Batching under load: every execution takes 20 ms, so concurrent requests pile up and batch.
    write_python_model(
        repo,
        "batched",
        "slow",
        delay_ms=20,
        max_batch_size=8,
        dims=[4],
        dynamic_batching={"preferred_batch_size": [4, 8], "max_queue_delay_microseconds": 20_000},
    )
    # One request executes, one waits, the rest are refused.
    patch_config(
        write_gated_model(
            repo, "tiny_queue", gates["tiny_queue"], max_batch_size=1, dims=[4], dynamic_batching=True
        ),
        "dynamic_batching { default_queue_policy { max_queue_size: 1 } }",
    )
    patch_config(
        write_gated_model(
            repo, "prioritized", gates["prioritized"], max_batch_size=1, dims=[4], dynamic_batching=True
        ),
        "dynamic_batching { priority_levels: 2 default_priority_level: 2 }",
    )
    patch_config(
        write_gated_model(
            repo, "reject_late", gates["reject_late"], max_batch_size=1, dims=[4], dynamic_batching=True
        ),
        "dynamic_batching { default_queue_policy { default_timeout_microseconds: 100000 } }",
    )
    patch_config(
        write_gated_model(
            repo, "delay_late", gates["delay_late"], max_batch_size=1, dims=[4], dynamic_batching=True
        ),
        "dynamic_batching { default_queue_policy { timeout_action: DELAY allow_timeout_override: true } }",
    )
    write_gated_model(
        repo, "cancellable", gates["cancellable"], max_batch_size=1, dims=[4], dynamic_batching=True
    )
    patch_config(
        write_python_model(repo, "warmed", "identity", max_batch_size=4, dims=[4], dynamic_batching=True),
        """model_warmup { name: "zeros" batch_size: 2 count: 2
             inputs { key: "INPUT0" value { data_type: TYPE_FP32 dims: [4] zero_data: true } } }""",
    )
    patch_config(
        write_python_model(repo, "warmup_fails", "execute_raises", mode="raise", max_batch_size=4, dims=[4]),
        """model_warmup { name: "zeros" batch_size: 1
             inputs { key: "INPUT0" value { data_type: TYPE_FP32 dims: [4] zero_data: true } } }""",
    )


@pytest.fixture(scope="module")
def gates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Gate]:
    root = tmp_path_factory.mktemp("scheduling_gates")
    return {name: Gate(root / name) for name in GATED}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, gates: dict[str, Gate]) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("scheduling_repo")
    write_scheduling_models(repo, gates)
    with start_server(repo, "--exit-on-error=false", "--metrics-interval-ms=200") as running:
        try:
            yield running
        finally:  # a failed test may leave an execution held: let it end so the server stops at once
            for gate in gates.values():
                gate.open()
