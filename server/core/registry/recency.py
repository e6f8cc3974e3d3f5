"""RecencyRanking: the least recently used models first, ranked once and kept for many evictions.

Why: under a memory budget, loads on demand come hundreds a second, and each needs a victim.
Ranking reads the recency of every resident (a sort of hundreds), so it is done once and kept:
an entry still stands while its model's recency is the one it was ranked with. A model used since,
or loaded since, is more recent than every entry left, so the first entry still standing is the
least recently used model. When the entries run out, the residents are ranked again.

Each load then evicts only what it needs, one model at a time. The alternative that was measured
(evicting ~3 % of the budget beyond the need, so that one ranking served several loads) unloaded
a dozen models at once, and that burst held up the requests of the models that stayed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator


class RecencyRanking:
    def __init__(self, recency: Callable[[str], float]) -> None:
        self._recency = recency  # seconds since the epoch of the model's last use (or load)
        self._ranked: dict[str, deque[tuple[float, str]]] = {}
        self.rankings = 0  # how many times the residents were ranked (tests, benchmarks)

    def candidates(self, pool: str, residents: Callable[[], Iterable[str]]) -> Iterator[str]:
        """Models of `residents()`, least recently used first, each taken off the ranking of `pool`
        (a device) as it is yielded; ranks again at most once per call when the ranking runs out."""
        ranked = self._ranked.get(pool)
        ranked_now = False
        while True:
            if not ranked:
                if ranked_now:
                    return
                ranked = deque(sorted((self._recency(name), name) for name in residents()))
                self._ranked[pool] = ranked
                self.rankings += 1
                ranked_now = True
                continue
            stamp, name = ranked.popleft()
            if self._recency(name) == stamp:  # not used (nor reloaded) since it was ranked
                yield name
