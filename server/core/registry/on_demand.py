"""On-demand loading: a request for a model that is in the repository but not loaded loads it.

The DataPlane asks only after its lookup failed (`VersionTable.get` raised), so a loaded model's
request pays nothing for it. Concurrent first requests share one load; each waits at most
`wait_s` for it, then fails with 503 (Unavailable). A load that failed is not retried by every
request: for `retry_after_s` the next ones get its message at once.

After the load the request goes through `DataPlane.submit` again; if the model was evicted in
between (the budget made room for another), that lookup fails again and the request waits for
the next load: a request racing an eviction is served by the old instance or waits, never fails.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from server.errors import ServerError, Unavailable
from server.vocabulary.types import InferenceRequest, InferenceResult

if TYPE_CHECKING:
    from server.core.registry import ModelRegistry
    from server.core.registry.lifecycle import LifecycleManager

log = logging.getLogger(__name__)

Submit = Callable[[InferenceRequest], "asyncio.Future[InferenceResult]"]


class OnDemandLoader:
    def __init__(
        self,
        registry: ModelRegistry,
        manager: LifecycleManager | None = None,
        *,
        wait_s: float = 120.0,
        retry_after_s: float = 5.0,
    ) -> None:
        self.registry = registry
        self.manager = manager
        self.wait_s = wait_s
        self.retry_after_s = retry_after_s
        self._loads: dict[str, asyncio.Task[None]] = {}
        self._failed: dict[str, tuple[float, str]] = {}

    def covers(self, name: str) -> bool:
        """A request for `name` should load it: in a repository, and no version is READY (a
        READY model's failed lookup is a version question, answered as it is)."""
        record = self.registry.table.record(name)
        if record is not None and record.has_ready_version():
            return False
        return self.registry.sources.find_model_dir(name) is not None

    def submit(self, request: InferenceRequest, submit: Submit) -> asyncio.Future[InferenceResult]:
        """A future for `request` that loads its model first (`submit` then queues it)."""
        return asyncio.ensure_future(self._load_then_submit(request, submit))

    async def _load_then_submit(self, request: InferenceRequest, submit: Submit) -> InferenceResult:
        await self.ensure_loaded(request.model)
        return await submit(request)

    async def ensure_loaded(self, name: str) -> None:
        """Load `name` (or join the load under way); raises Unavailable after `wait_s`, or the
        load's own error."""
        failed = self._failed.get(name)
        if failed is not None:
            if time.monotonic() - failed[0] < self.retry_after_s:
                raise Unavailable(f"model '{name}' failed to load on demand: {failed[1]}")
            del self._failed[name]
        task = self._loads.get(name)
        if task is None:
            task = asyncio.ensure_future(self._load(name))
            self._loads[name] = task
            task.add_done_callback(lambda done: self._settled(name, done))
        try:
            await asyncio.wait_for(asyncio.shield(task), self.wait_s)
        except TimeoutError:
            raise Unavailable(
                f"model '{name}' is loading on demand and was not ready within {self.wait_s:g} s"
            ) from None

    def _settled(self, name: str, task: asyncio.Task[None]) -> None:
        self._loads.pop(name, None)
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have given up already

    async def _load(self, name: str) -> None:
        started = time.monotonic()
        log.debug("loading '%s' on demand", name)  # the loader logs "loading: name:version"
        try:
            await self.registry.load(name)
        except ServerError as exc:
            self._failed[name] = (time.monotonic(), exc.message)
            log.error("on-demand load of '%s' failed: %s", name, exc.message)
            raise Unavailable(f"model '{name}' failed to load on demand: {exc.message}") from None
        if self.manager is not None:
            self.manager.counters.loads_on_demand += 1
        log.info("loaded '%s' on demand in %.2f s", name, time.monotonic() - started)
