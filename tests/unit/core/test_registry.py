"""ModelRegistry without worker processes: version lookup, readiness, the index, refusals.

Loads that get as far as starting instances are covered by tests/integration/core.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2

from server.core.dataplane import DataPlane, RepositoryEntry
from server.core.model_version import LoadedVersion
from server.core.registry import UNLOADED_REASON, ModelRecord, ModelRegistry, ModelState, VersionSlot
from server.core.registry.model_folders import write_override_files
from server.core.registry.prepare import OverrideFolders
from server.core.request_validator import RequestValidator
from server.core.scheduler.default import DefaultScheduler
from server.core.stats import ModelStats
from server.errors import InvalidInput, LoadError, ModelNotFound, ModelNotReady, ServerError


def registry(*roots: Path) -> ModelRegistry:
    return ModelRegistry(list(roots), worker_options=None, visible_gpus=[])


def loaded(name: str, version: int) -> LoadedVersion:
    config = model_config_pb2.ModelConfig(name=name, backend="python")
    scheduler = DefaultScheduler(name, version, [], ModelStats())
    return LoadedVersion(
        name,
        version,
        config,
        Path("/nowhere"),
        [],
        scheduler,
        ModelStats(),
        RequestValidator(name, config),
        [],
    )


READY, UNAVAILABLE, LOADING = ModelState.READY, ModelState.UNAVAILABLE, ModelState.LOADING


def record(models: ModelRegistry, name: str, *, error: str = "", **slots: VersionSlot) -> ModelRecord:
    """A record in the table, as a load that was asked for leaves it."""
    result = models.table.ensure(name)
    result.attempted, result.error = True, error
    result.versions = {int(key.removeprefix("v")): slot for key, slot in slots.items()}
    return result


def ready(name: str, version: int) -> VersionSlot:
    return VersionSlot(READY, "", loaded(name, version))


def test_empty_version_means_the_highest_ready_one() -> None:
    models = registry()
    record(models, "m", v1=ready("m", 1), v2=ready("m", 2), v3=VersionSlot(LOADING))
    assert models.table.get("m").version == 2
    assert models.table.get("m", "1").version == 1


def test_lookup_errors_use_tritons_words() -> None:
    models = registry()
    record(models, "m", v1=VersionSlot(UNAVAILABLE, "init failed"))
    table = models.table
    with pytest.raises(ModelNotFound, match=r"^Request for unknown model: 'x' is not found$"):
        table.get("x")
    with pytest.raises(ModelNotFound, match=r"^Request for unknown model: 'm' has no available versions$"):
        table.get("m")
    with pytest.raises(ModelNotFound, match=r"^Request for unknown model: 'm' version 7 is not found$"):
        table.get("m", "7")
    with pytest.raises(ModelNotReady, match="'m' version 1 is not at ready state"):
        table.get("m", "1")
    with pytest.raises(InvalidInput, match="version should be an integral value > 0"):
        table.get("m", "abc")


def test_strict_readiness_follows_tritons_rule() -> None:
    models = registry()
    table = models.table
    assert table.all_ready()
    record(models, "good", v1=ready("good", 1))
    table.ensure("never_loaded")  # explicit mode, not asked for
    assert table.all_ready()
    record(models, "unloaded", v1=VersionSlot(UNAVAILABLE, UNLOADED_REASON))
    assert table.all_ready()
    record(models, "bad", v1=VersionSlot(UNAVAILABLE, "init failed"))
    assert not table.all_ready()
    table.forget("bad")
    record(models, "bad_config", error="config.pbtxt: unknown field")
    assert not table.all_ready()


def test_repository_index_lists_every_model_with_its_state(tmp_path: Path) -> None:
    for name in ("a_ready", "b_failed", "c_never", ".hidden"):
        (tmp_path / name).mkdir()
    models = registry(tmp_path)
    record(models, "a_ready", v1=VersionSlot(UNAVAILABLE, UNLOADED_REASON), v2=ready("a_ready", 2))
    record(models, "b_failed", error="bad config")
    plane = DataPlane(models)
    # Triton's words, as strings: the protocols answer them as they are.
    assert plane.repository_index() == [
        RepositoryEntry("a_ready", "1", "UNAVAILABLE", UNLOADED_REASON),
        RepositoryEntry("a_ready", "2", "READY", ""),
        RepositoryEntry("b_failed", "", "UNAVAILABLE", "bad config"),
        RepositoryEntry("c_never", "", "", ""),
    ]
    assert plane.repository_index(ready_only=True) == [RepositoryEntry("a_ready", "2", "READY", "")]


def test_dataplane_readiness_needs_start_and_ends_at_exit() -> None:
    plane = DataPlane(registry())
    assert plane.live() and not plane.ready()
    plane.mark_started()
    assert plane.ready()
    plane.mark_exiting()
    assert not plane.live() and not plane.ready()


def test_load_refuses_bad_names_and_unknown_models(tmp_path: Path) -> None:
    models = registry(tmp_path)
    with pytest.raises(LoadError, match="invalid model name"):
        asyncio.run(models.load("../etc"))
    with pytest.raises(ServerError, match=r"^failed to load 'ghost', failed to poll from model repository$"):
        asyncio.run(models.load("ghost"))
    assert models.table.names() == []  # nothing invented in the index


def test_a_broken_config_is_a_load_error_listed_with_its_reason(tmp_path: Path) -> None:
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "config.pbtxt").write_text('name: "broken"\nbogus_field: 1\n')
    models = registry(tmp_path)
    with pytest.raises(LoadError, match="bogus_field"):
        asyncio.run(models.load("broken"))
    [entry] = DataPlane(models).repository_index()
    assert (entry.name, entry.version, entry.state) == ("broken", "", "UNAVAILABLE")
    assert "bogus_field" in entry.reason
    assert not models.table.all_ready()


def test_a_model_without_version_folder_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.pbtxt").write_text(
        'name: "empty"\nbackend: "python"\n'
        'input [ { name: "I" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
        'output [ { name: "O" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
    )
    models = registry(tmp_path)
    with pytest.raises(LoadError, match="version"):  # the validator's E210 words
        asyncio.run(models.load("empty"))
    failed = models.table.record("empty")
    assert failed is not None and "version" in failed.error


@pytest.mark.parametrize(
    "key", ["file:../escape.py", "file:/etc/passwd", "file:1/../../x", "file:", "file:a\\b"]
)
def test_file_overrides_never_leave_their_temporary_folder(key: str) -> None:
    with pytest.raises(LoadError, match="must be a relative path inside the model folder"):
        write_override_files("m", "{}", {key: b"x"})


def test_file_overrides_need_a_config_and_land_in_a_fresh_folder(tmp_path: Path) -> None:
    folders = OverrideFolders()
    with pytest.raises(LoadError, match="Load parameter 'config' must be specified for model file override"):
        write_override_files("m", None, {"file:1/model.py": b"x"})
    root = write_override_files("m", "{}", {"file:1/model.py": b"code", "1/extra.txt": b"e"})
    try:
        assert (root / "m" / "1" / "model.py").read_bytes() == b"code"
        assert (root / "m" / "1" / "extra.txt").read_bytes() == b"e"
        assert not root.is_relative_to(tmp_path)
        folders.replace("m", root)
    finally:
        folders.clear()
    assert not root.exists()


def test_fingerprint_changes_with_a_new_version_folder_or_an_edit(tmp_path: Path) -> None:
    model = tmp_path / "m"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text('name: "m"\n')
    models = registry(tmp_path)
    before = models.sources.fingerprint("m")
    assert models.sources.fingerprint("m") == before
    (model / "2").mkdir()
    after_new_version = models.sources.fingerprint("m")
    assert after_new_version != before
    (model / "config.pbtxt").write_text('name: "m"\nmax_batch_size: 4\n')
    assert models.sources.fingerprint("m") != after_new_version
    assert models.sources.fingerprint("missing") is None
