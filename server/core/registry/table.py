"""The version table: which model versions exist, their state, and the objects serving them.

Each model has a `ModelRecord` with version slots in Triton's states (`ModelState`: LOADING,
READY, UNLOADING, UNAVAILABLE + reason). A READY slot holds a `LoadedVersion` (instances,
scheduler, statistics, validator). Readers (the DataPlane, app.py) use the `VersionTable`
lookups only; the loader is the one writer, through the record and slot transitions below.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from server.core.model_version import LoadedVersion
from server.core.routing import WeightedVersionRouter
from server.errors import InvalidInput, ModelNotFound, ModelNotReady
from server.repository import ModelConfig


class ModelState(Enum):
    """A version's state; `.value` is Triton's word, as the protocols answer it."""

    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    LOADING = "LOADING"
    UNLOADING = "UNLOADING"


UNLOADED_REASON = "unloaded"
RELOAD_FAILED = "reload failed, still serving the previous load: "


@dataclass
class VersionSlot:
    state: ModelState
    reason: str = ""
    serving: LoadedVersion | None = None

    @property
    def is_ready(self) -> bool:
        return self.state is ModelState.READY and self.serving is not None

    def start_loading(self) -> None:
        """A version being (re)loaded: one that serves keeps serving until its replacement is in."""
        if self.serving is None:
            self.state, self.reason = ModelState.LOADING, ""

    def serve(self, loaded: LoadedVersion) -> None:
        self.serving, self.state, self.reason = loaded, ModelState.READY, ""

    def fail(self, message: str, *, keep_serving: bool = True) -> None:
        """A load of this version failed: a serving version stays and says why in its reason.
        Without `keep_serving` (every instance gave up) it is UNAVAILABLE, still to be closed."""
        if self.serving is not None and keep_serving:
            self.reason = RELOAD_FAILED + message
        else:
            self.state, self.reason = ModelState.UNAVAILABLE, message

    def start_unloading(self) -> LoadedVersion | None:
        """Returns the version to drain and close, if any."""
        if self.serving is not None:
            self.state = ModelState.UNLOADING
        return self.serving

    def unloaded(self) -> None:
        self.serving, self.state, self.reason = None, ModelState.UNAVAILABLE, UNLOADED_REASON

    @property
    def unloaded_on_purpose(self) -> bool:
        return self.state is ModelState.UNAVAILABLE and self.reason == UNLOADED_REASON


@dataclass
class ModelRecord:
    """Everything the table knows about one model name."""

    name: str
    versions: dict[int, VersionSlot] = field(default_factory=dict)
    config: ModelConfig | None = None  # config of the last successful load
    error: str = ""  # model-level failure (bad config, no version) when no slot says it
    attempted: bool = False  # a load was asked for: Triton's readiness then counts this model
    fingerprint: tuple[Any, ...] | None = None  # what was on disk at the last load (poll mode)
    router: WeightedVersionRouter | None = None  # from the `version_weights` parameter, if any
    # Set when the lifecycle manager unloaded it (budget, idle) or left it out at start-up: the
    # reason the index shows; the next request loads it (on_demand.py). "" otherwise.
    loadable: str = ""

    def slot(self, number: int) -> VersionSlot:
        """The slot of a version, created LOADING for a new one."""
        return self.versions.setdefault(number, VersionSlot(ModelState.LOADING))

    def mark_loadable(self, reason: str) -> None:
        """Not loaded, but loads on first request: neither a failure nor counted by readiness."""
        self.loadable, self.error = reason, ""
        for slot in self.versions.values():
            if slot.serving is None:
                slot.reason = reason

    def has_ready_version(self) -> bool:
        return any(slot.state is ModelState.READY for slot in self.versions.values())

    def failed_before_start(self, message: str) -> None:
        """A load failed before any version started: serving versions stay, the reason is shown."""
        serving = [slot for slot in self.versions.values() if slot.serving is not None]
        if serving:
            for slot in serving:
                slot.reason = RELOAD_FAILED + message
        else:
            self.versions.clear()
            self.error = message


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One line of the repository index; `state` None: never loaded (no version entry)."""

    name: str
    version: str  # "" when the model has no version entry (never loaded, or failed before)
    state: ModelState | None
    reason: str


class VersionTable:
    """Models x versions for the whole server."""

    def __init__(self) -> None:
        self._records: dict[str, ModelRecord] = {}

    # -- lookups (the hot path and the DataPlane) -------------------------------------------------
    def get(self, name: str, version: str = "", *, route: bool = False) -> LoadedVersion:
        """The READY version a request for (name, version) goes to; "" = the highest READY one,
        or with `route` (inference) the next one the `version_weights` parameter picks."""
        record = self._records.get(name)
        if record is None or not record.versions:
            raise ModelNotFound(f"Request for unknown model: '{name}' is not found")
        if not version and route and record.router is not None:
            ready = [n for n, slot in record.versions.items() if slot.is_ready]
            picked = record.router.pick(ready)
            if picked is not None:
                serving = record.versions[picked].serving
                assert serving is not None
                return serving
        if not version:
            for number in sorted(record.versions, reverse=True):
                slot = record.versions[number]
                if slot.is_ready and slot.serving is not None:
                    return slot.serving
            raise ModelNotFound(f"Request for unknown model: '{name}' has no available versions")
        try:
            number = int(version)
        except ValueError:
            raise InvalidInput(
                f"failed to get model version from specified version string '{version}', "
                "version should be an integral value > 0"
            ) from None
        found = record.versions.get(number)
        if found is None:
            raise ModelNotFound(f"Request for unknown model: '{name}' version {number} is not found")
        if not found.is_ready or found.serving is None:
            raise ModelNotReady(f"Request for unknown model: '{name}' version {number} is not at ready state")
        return found.serving

    def loaded_versions(self, name: str | None = None) -> Iterator[LoadedVersion]:
        """Every READY version (of one model when `name` is given), by name then version."""
        names = sorted(self._records) if name is None else [name] if name in self._records else []
        for model in names:
            record = self._records[model]
            for number in sorted(record.versions):
                slot = record.versions[number]
                if slot.is_ready and slot.serving is not None:
                    yield slot.serving

    def all_ready(self) -> bool:
        """Triton's strict readiness: every model a load was asked for has all versions READY
        (a version unloaded on purpose does not count against it)."""
        for record in self._records.values():
            if not record.attempted or record.loadable:
                continue
            if not record.versions:
                return False
            for slot in record.versions.values():
                if slot.state is not ModelState.READY and not slot.unloaded_on_purpose:
                    return False
                if slot.serving is not None and not slot.serving.has_live_instance:
                    return False  # every instance crashed: restarting (issue #7)
        return True

    def index(self, names_on_disk: Iterable[str] = ()) -> list[IndexEntry]:
        """Every model of `names_on_disk` (loaded or not) and every model the table holds."""
        entries: list[IndexEntry] = []
        for name in sorted(set(names_on_disk) | set(self._records)):
            record = self._records.get(name)
            if record is not None and record.versions:
                for number in sorted(record.versions):
                    slot = record.versions[number]
                    entries.append(IndexEntry(name, str(number), slot.state, slot.reason))
            elif record is not None and record.error:
                entries.append(IndexEntry(name, "", ModelState.UNAVAILABLE, record.error))
            elif record is not None and record.loadable:
                entries.append(IndexEntry(name, "", None, record.loadable))
            else:
                entries.append(IndexEntry(name, "", None, ""))
        return entries

    # -- records (the loader and the poller) ------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self._records)

    def record(self, name: str) -> ModelRecord | None:
        return self._records.get(name)

    def records(self) -> list[ModelRecord]:
        return list(self._records.values())

    def ensure(self, name: str) -> ModelRecord:
        """The record of `name`, created empty (listed as never loaded) if there is none."""
        return self._records.setdefault(name, ModelRecord(name))

    def forget(self, name: str) -> None:
        self._records.pop(name, None)
