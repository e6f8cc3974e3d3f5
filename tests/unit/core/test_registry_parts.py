"""The registry's parts on their own: version slots, the table, sources, override folders,
the loader's policy seam and the poller (with a loader that starts no worker)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from tritonclient.grpc import model_config_pb2

from server.core.model_version import LoadedVersion
from server.core.registry import (
    UNLOADED_REASON,
    IndexEntry,
    ModelLoader,
    ModelRegistry,
    ModelState,
    RepositoryPoller,
    RepositorySources,
    VersionSlot,
    VersionTable,
)
from server.core.registry.prepare import OverrideFolders
from server.core.request_validator import RequestValidator
from server.core.scheduler.default import DefaultScheduler
from server.core.stats import ModelStats
from server.errors import ConfigError, LoadError
from server.repository import ModelConfig, load_server_config
from server.vocabulary.instances import InstanceSpec
from tests.support.models import write_python_model


def loaded(name: str, version: int) -> LoadedVersion:
    config = model_config_pb2.ModelConfig(name=name, backend="python")
    scheduler = DefaultScheduler(name, version, [], ModelStats())
    stats = ModelStats()
    return LoadedVersion(
        name, version, config, Path("/nowhere"), [], scheduler, stats, RequestValidator(name, config), []
    )


def test_states_answer_tritons_words() -> None:
    assert [state.value for state in ModelState] == ["READY", "UNAVAILABLE", "LOADING", "UNLOADING"]


def test_a_serving_slot_keeps_serving_through_a_failed_reload() -> None:
    slot = VersionSlot(ModelState.LOADING)
    slot.start_loading()
    assert (slot.state, slot.reason) == (ModelState.LOADING, "")
    version = loaded("m", 1)
    slot.serve(version)
    assert slot.is_ready
    slot.start_loading()  # a reload: the old version keeps answering meanwhile
    slot.fail("init failed")
    assert slot.is_ready and slot.serving is version
    assert slot.reason == "reload failed, still serving the previous load: init failed"
    slot.fail("every instance failed: crash", keep_serving=False)
    assert (slot.state, slot.serving) == (ModelState.UNAVAILABLE, version)  # still to be closed


def test_a_new_slot_that_fails_is_unavailable_and_unloading_ends_unloaded() -> None:
    slot = VersionSlot(ModelState.LOADING)
    slot.fail("bad file")
    assert (slot.state, slot.reason, slot.serving) == (ModelState.UNAVAILABLE, "bad file", None)
    assert slot.start_unloading() is None
    slot.serve(loaded("m", 1))
    assert slot.start_unloading() is not None and slot.state is ModelState.UNLOADING
    slot.unloaded()
    assert slot.unloaded_on_purpose and slot.reason == UNLOADED_REASON and slot.serving is None


def test_table_lists_ready_versions_per_model_and_indexes_names_on_disk() -> None:
    table = VersionTable()
    a = table.ensure("a")
    a.versions = {2: VersionSlot(ModelState.READY, "", loaded("a", 2)), 1: VersionSlot(ModelState.LOADING)}
    table.ensure("b").versions = {1: VersionSlot(ModelState.READY, "", loaded("b", 1))}
    table.ensure("c").error = "bad config"
    assert [(v.name, v.version) for v in table.loaded_versions()] == [("a", 2), ("b", 1)]
    assert [v.name for v in table.loaded_versions("b")] == ["b"]
    assert list(table.loaded_versions("missing")) == []
    assert table.index(["d", "a"]) == [
        IndexEntry("a", "1", ModelState.LOADING, ""),
        IndexEntry("a", "2", ModelState.READY, ""),
        IndexEntry("b", "1", ModelState.READY, ""),
        IndexEntry("c", "", ModelState.UNAVAILABLE, "bad config"),
        IndexEntry("d", "", None, ""),
    ]
    table.forget("a")
    assert table.names() == ["b", "c"]


def test_sources_list_folders_find_the_first_repository_and_fingerprint_server_entries(
    tmp_path: Path,
) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    for folder in (first / "m", second / "m", second / "n", second / ".git"):
        folder.mkdir(parents=True)
    (second / "config.pbtxt").write_text('model_config_list { config { name: "n" max_batch_size: 2 } }\n')
    sources = RepositorySources([first, second])
    assert sources.model_names_on_disk() == ["m", "n"]
    assert sources.find_model_dir("m") == first.resolve() / "m"
    before = sources.fingerprint("n")
    sources.server_configs = {second.resolve(): load_server_config(second / "config.pbtxt")}
    assert sources.fingerprint("n") != before  # the server-level entry is part of the model
    assert sources.fingerprint("gone") is None


def test_override_folders_remove_the_folder_they_replace(tmp_path: Path) -> None:
    folders = OverrideFolders()
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    new.mkdir()
    folders.replace("m", old)
    folders.replace("m", old)  # the same folder again stays
    assert old.exists()
    folders.replace("m", new)
    assert not old.exists() and folders.get("m") == new
    folders.clear()
    assert not new.exists() and folders.get("m") is None


class RefusingPolicy:
    """A LoadPolicy that refuses every load (what a full memory budget would do)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, list[InstanceSpec]]] = []
        self.ended: list[str] = []

    async def before_load(self, name: str, config: ModelConfig, specs: list[InstanceSpec]) -> None:
        self.seen.append((name, specs))
        raise LoadError("memory budget exhausted")

    def after_load(self, name: str) -> None:
        self.ended.append(name)

    def after_unload(self, name: str) -> None:
        self.ended.append(f"unloaded {name}")


def test_the_load_policy_sees_the_placed_instances_and_can_refuse_before_any_start(tmp_path: Path) -> None:
    write_python_model(tmp_path, "m", "identity", instance_count=2)
    policy = RefusingPolicy()
    models = ModelRegistry([tmp_path], worker_options=None, visible_gpus=[], policy=policy)
    with pytest.raises(LoadError, match="memory budget exhausted"):
        asyncio.run(models.load("m"))
    [(name, specs)] = policy.seen
    assert name == "m" and [spec.kind for spec in specs] == ["KIND_CPU", "KIND_CPU"]
    assert policy.ended == ["m"]  # after_load runs whatever the outcome
    record = models.table.record("m")
    assert record is not None and record.error == "memory budget exhausted" and not record.versions


class RecordingLoader(ModelLoader):
    """Marks models loaded in the table without starting anything; `broken` loads fail."""

    def __init__(self, table: VersionTable, sources: RepositorySources, broken: set[str]) -> None:
        super().__init__(table, sources, worker_options=None, visible_gpus=[])
        self.broken = broken
        self.calls: list[str] = []

    async def load(
        self, name: str, config_json: str | None = None, files: dict[str, bytes] | None = None
    ) -> None:
        self.calls.append(f"load {name}")
        record = self.table.ensure(name)
        record.attempted = True
        if name in self.broken:
            raise LoadError(f"{name} is broken")
        record.versions = {1: VersionSlot(ModelState.READY, "", loaded(name, 1))}

    async def remove(self, name: str) -> None:
        self.calls.append(f"remove {name}")
        self.table.forget(name)


def poller_over(root: Path, broken: set[str], reader: Any = None) -> tuple[RepositoryPoller, RecordingLoader]:
    table, sources = VersionTable(), RepositorySources([root])
    loader = RecordingLoader(table, sources, broken)
    return RepositoryPoller(table, loader, sources, interval_s=3600, read_server_configs=reader), loader


def test_a_poll_loads_new_reloads_changed_and_removes_deleted_models(tmp_path: Path) -> None:
    for name in ("a", "b", "broken"):
        (tmp_path / name / "1").mkdir(parents=True)
    poller, loader = poller_over(tmp_path, {"broken"})
    asyncio.run(poller.poll_once())
    assert loader.calls == ["load a", "load b", "load broken"]
    loader.calls.clear()
    asyncio.run(poller.poll_once())
    assert loader.calls == []  # a failed load is not retried until its files change
    (tmp_path / "b" / "2").mkdir()
    (tmp_path / "a" / "1").rmdir()
    (tmp_path / "a").rmdir()
    asyncio.run(poller.poll_once())
    assert loader.calls == ["remove a", "load b"]


def test_a_broken_server_config_keeps_the_previous_one(tmp_path: Path) -> None:
    previous: dict[Path, Any] = {tmp_path: None}

    def broken() -> dict[Path, Any]:
        raise ConfigError("config.pbtxt: bad")

    poller, _ = poller_over(tmp_path, set(), broken)
    poller.sources.server_configs = previous
    asyncio.run(poller.reload_server_configs())
    assert poller.sources.server_configs is previous
    poller.read_server_configs = dict
    asyncio.run(poller.reload_server_configs())
    assert poller.sources.server_configs == {}


def test_the_poller_task_stops_when_asked(tmp_path: Path) -> None:
    poller, loader = poller_over(tmp_path, set())

    async def start_and_stop() -> None:
        poller.start()
        await poller.stop()
        await poller.stop()  # stopping twice is harmless

    asyncio.run(start_and_stop())
    assert loader.calls == []
