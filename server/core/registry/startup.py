"""Start-up with many models: parallel loads, a progress report, and a summary.

`load_models` loads the models the control mode names, `--model-load-thread-count` at a time (as
Triton's flag; the instances of one model start in parallel too), while a `LoadProgress` reports:
a progress bar on a terminal, a plain line every ~10 % (and at the end) in a log. Models the memory
budget leaves out at start-up (lifecycle.py `deferred`) are not failures: they load on their
first request.

`startup_summary` replaces the per-model table when there are more than `TABLE_LIMIT` models:
counts by state, then each failure with its reason; `tritonctl models list` shows the full table.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from server.errors import ServerError

if TYPE_CHECKING:
    from server.core.registry import ModelRegistry
    from server.core.registry.lifecycle import LifecycleManager

log = logging.getLogger(__name__)

TABLE_LIMIT = 30  # more models than this: a summary instead of the table
FAILURES_SHOWN = 20


class LoadProgress:
    """Loaded / total, on a terminal as a bar, in a log as lines."""

    def __init__(self, total: int, *, stream: Any = None, terminal: bool | None = None) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.started = time.monotonic()
        self._stream = stream if stream is not None else sys.stderr
        self._terminal = self._stream.isatty() if terminal is None else terminal
        self._next_line = 0.1
        self._bar: Any = None
        if self._terminal and total > 1:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("loading models"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[failed]} failed"),
                TimeElapsedColumn(),
                console=Console(file=self._stream),
                transient=True,
            )
            self._task = self._bar.add_task("models", total=total, failed=0)
            self._bar.start()

    def advance(self, ok: bool) -> None:
        self.done += 1
        self.failed += 0 if ok else 1
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, failed=self.failed)
        elif self.total >= 10 and (self.done >= self._next_line * self.total or self.done == self.total):
            self._next_line = (self.done * 10 // self.total + 1) / 10
            log.info(
                "loading models: %d/%d (%d%%), %d failed, %.1f s",
                self.done,
                self.total,
                self.done * 100 // self.total,
                self.failed,
                time.monotonic() - self.started,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


async def load_models(
    registry: ModelRegistry,
    names: list[str],
    *,
    thread_count: int = 4,
    manager: LifecycleManager | None = None,
    progress: LoadProgress | None = None,
) -> list[str]:
    """Load `names`, `thread_count` at a time; returns those that failed (deferred ones excluded)."""
    from server.core.registry.lifecycle import DEFERRED_REASON

    gate = asyncio.Semaphore(max(1, thread_count))
    failed: list[str] = []

    async def load(name: str) -> None:
        ok = True
        async with gate:
            try:
                await registry.load(name)
            except ServerError:
                record = registry.table.record(name)
                if manager is not None and name in manager.deferred and record is not None:
                    record.mark_loadable(DEFERRED_REASON)
                else:
                    ok = False
                    failed.append(name)
        if progress is not None:
            progress.advance(ok)

    try:
        results = await asyncio.gather(*(load(name) for name in names), return_exceptions=True)
    finally:
        if progress is not None:
            progress.close()
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [name for name in names if name in set(failed)]


def startup_summary(entries: Iterable[Any]) -> list[str]:
    """Lines that sum up the repository index (RepositoryEntry items) at start-up."""
    rows = list(entries)
    states = Counter(entry.state or "not loaded" for entry in rows)
    models = len({entry.name for entry in rows})
    counts = ", ".join(f"{count} {state}" for state, count in sorted(states.items(), key=lambda kv: -kv[1]))
    lines = [f"{models} models ({len(rows)} versions): {counts}"]
    loadable = [entry for entry in rows if not entry.state and entry.reason]
    if loadable:
        lines.append(f"{len(loadable)} load on their first request ({loadable[0].reason.split(':')[0]})")
    failures = [entry for entry in rows if entry.state == "UNAVAILABLE" and entry.reason]
    for entry in failures[:FAILURES_SHOWN]:
        where = f"{entry.name}:{entry.version}" if entry.version else entry.name
        lines.append(f"  FAILED {where}: {entry.reason.splitlines()[0]}")
    if len(failures) > FAILURES_SHOWN:
        lines.append(f"  ... and {len(failures) - FAILURES_SHOWN} more failures")
    lines.append("the full table: tritonctl models list")
    return lines
