"""Keep the cycle collector off the request path while models come and go: freeze what a load built.

Why: CPython's collector looks at every container object again in each young collection until the
object reaches the oldest generation, and at all of them in each full collection. A load builds a
few hundred long-lived objects (config, scheduler, pool, channels; in a host process the session,
its thread and the worker loop). Under a memory budget models load on demand, up to ~200 a second
in benchmarks/many_models.py, and with hundreds resident the young collections took ~4 ms and the
full ones 40-60 ms (up to 110 ms in a host with 2,000 instance threads). Each one stops every
request in flight in that process. `settle()` after a load collects the young garbage, then moves
what survived out of the collector's sight (`gc.freeze`).

The price: a garbage cycle that forms among frozen objects later (an unloaded model whose parts
still point at each other) waits for the next full pass, at most one per `full_pass_every_s`.
Unloads break the cycles we know of (workers/side.py, supervisor.py), so that pass finds little.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable

FULL_PASS_EVERY_S = 300.0


class LoadSettler:
    """Call `settle()` when a load ends; thread-safe (a host's instances load on their own threads)."""

    def __init__(
        self,
        full_pass_every_s: float = FULL_PASS_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.full_pass_every_s = full_pass_every_s
        self._clock = clock
        self._last_full_pass = clock()
        self._lock = threading.Lock()
        self.full_passes = 0

    def settle(self) -> None:
        with self._lock:
            # Young garbage first: frozen, an unreachable cycle would wait for the full pass.
            gc.collect(1)
            now = self._clock()
            if now - self._last_full_pass >= self.full_pass_every_s:
                gc.unfreeze()
                gc.collect()
                self._last_full_pass = now
                self.full_passes += 1
            gc.freeze()


_settler = LoadSettler()


def settle_after_load() -> None:
    """The process-wide settler: after a load, keep what it built out of the collector's way."""
    _settler.settle()
