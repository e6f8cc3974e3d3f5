"""Schedulers: how a model version's requests reach its instances.

`create_scheduler` is what the registry calls once per loaded model version: a `SequenceBatcher`
when the config has `sequence_batching` (stateful models), a `DynamicBatcher` when it has
`dynamic_batching`, else the `DefaultScheduler` (one request per execution,
still spread over every instance).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from server.core.scheduler.base import Scheduler

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tritonclient.grpc import model_config_pb2

    from server.core.stats import ModelStats
    from server.workers.channel import WorkerChannel

__all__ = ["Scheduler", "create_scheduler"]


def create_scheduler(
    config: model_config_pb2.ModelConfig,
    version: int | str,
    channels: Sequence[WorkerChannel],
    stats: ModelStats,
) -> Scheduler:
    """The scheduler for one model version over its live instances."""
    if config.HasField("sequence_batching"):
        from server.core.scheduler.sequence import SequenceBatcher

        return SequenceBatcher(config, version, channels, stats)
    if config.HasField("dynamic_batching"):
        from server.core.scheduler.dynamic_batcher import DynamicBatcher

        return DynamicBatcher(config, version, channels, stats)
    from server.core.scheduler.default import DefaultScheduler

    return DefaultScheduler(
        config.name, int(version), list(channels), stats, max_batch_size=config.max_batch_size
    )
