"""Stand-ins for the lifecycle manager's tests: a loaded version with what the manager reads
(pending requests, last inference, config, instances) and a loader that serves it through the
policy's hooks, as ModelLoader does."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from server.core.registry.table import VersionTable
from server.repository import ModelConfig
from server.vocabulary.instances import InstanceSpec


@dataclass
class FakeVersion:
    name: str
    version: int = 1
    config: ModelConfig = field(default_factory=lambda: ModelConfig(backend="python"))
    pending: int = 0
    last_inference_ms: int = 0
    memory: Any = None
    channels: list[Any] = field(default_factory=list)
    instances: list[InstanceSpec] = field(default_factory=list)

    @property
    def scheduler(self) -> Any:
        return SimpleNamespace(pending=self.pending)

    @property
    def stats(self) -> Any:
        return SimpleNamespace(last_inference_ms=self.last_inference_ms)


class FakeLoader:
    """Loads put a FakeVersion in the table (through the policy, as ModelLoader does)."""

    def __init__(self, table: VersionTable, tmp: Path) -> None:
        self.table = table
        self.policy: Any = None
        self.unloaded: list[str] = []
        self.sources = SimpleNamespace(find_model_dir=lambda name: tmp / name)

    def busy(self, name: str) -> bool:
        return False

    async def load(self, name: str) -> None:
        try:
            await self.policy.before_load(name, ModelConfig(), [])
            self.table.ensure(name).slot(1).serve(FakeVersion(name))  # type: ignore[arg-type]
        finally:
            self.policy.after_load(name)

    async def unload(self, name: str) -> None:
        self.unloaded.append(name)
        record = self.table.record(name)
        assert record is not None
        for slot in record.versions.values():
            slot.start_unloading()
            slot.unloaded()
        self.policy.after_unload(name)  # as ModelLoader.unload does
