"""The rollout state file: what each rollout changed and how far it got, for `status` and `rollback`.

One small JSON file (default `$XDG_STATE_HOME/tritonctl/rollouts.json`, else
`~/.local/state/tritonctl/rollouts.json`; `--state-file` or TRITONCTL_ROLLOUT_STATE to move it)
holds the last rollouts per model, newest last. Writes replace the file atomically under an
advisory lock, so a `status` from another shell never reads half a file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from tritonctl.rollout.errors import RolloutError

STATE_ENV = "TRITONCTL_ROLLOUT_STATE"
HISTORY_PER_MODEL = 20


class Phase(str, Enum):
    PLANNED = "planned"
    LOADING = "loading"
    SHADOW = "shadow"
    CANARY = "canary"
    PROMOTING = "promoting"
    DONE = "done"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"

    @property
    def in_progress(self) -> bool:
        return self not in (Phase.DONE, Phase.ROLLED_BACK, Phase.ROLLBACK_FAILED)


def default_state_file() -> Path:
    if os.environ.get(STATE_ENV):
        return Path(os.environ[STATE_ENV]).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tritonctl" / "rollouts.json"


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass
class RolloutRecord:
    """One rollout of one model: enough to show it and to put the model back as it was."""

    model: str
    server: str
    protocol: str
    from_version: int
    to_version: int
    original_config: dict[str, Any]
    phase: Phase = Phase.PLANNED
    weights: dict[str, int] = field(default_factory=dict)  # version -> weight now set (JSON keys)
    reason: str = ""  # why it rolled back (or failed to)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)
    started_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)
    events: list[dict[str, str]] = field(default_factory=list)

    def note(self, message: str) -> None:
        self.updated_at = now_iso()
        self.events.append({"at": self.updated_at, "phase": self.phase.value, "message": message})

    def owner_alive(self) -> bool:
        """Whether the process that runs this rollout still runs (only knowable on its host)."""
        if not self.phase.in_progress or self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["phase"] = self.phase.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RolloutRecord:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        known["phase"] = Phase(known.get("phase", Phase.PLANNED.value))
        return cls(**known)


class StateStore:
    """The state file: read, and replace one record at a time."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_state_file()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path.with_name(self.path.name + ".lock"), "a+") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
        except OSError as exc:
            raise RolloutError(f"cannot use the rollout state file {self.path}: {exc}") from None

    def _read(self) -> dict[str, list[dict[str, Any]]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise RolloutError(f"cannot read the rollout state file {self.path}: {exc}") from None
        rollouts = data.get("rollouts") if isinstance(data, dict) else None
        return rollouts if isinstance(rollouts, dict) else {}

    def history(self, model: str) -> list[RolloutRecord]:
        """The model's rollouts, oldest first."""
        with self._locked():
            return [RolloutRecord.from_json(item) for item in self._read().get(model, [])]

    def latest(self, model: str) -> RolloutRecord | None:
        records = self.history(model)
        return records[-1] if records else None

    def save(self, record: RolloutRecord) -> None:
        with self._locked():
            rollouts = self._read()
            items = [item for item in rollouts.get(record.model, []) if item.get("id") != record.id]
            items.append(record.to_json())
            rollouts[record.model] = items[-HISTORY_PER_MODEL:]
            temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            temporary.write_text(json.dumps({"rollouts": rollouts}, indent=2), encoding="utf-8")
            temporary.replace(self.path)
