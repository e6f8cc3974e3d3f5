"""Which version answers a request that names none, when the config sets `version_weights`.

Smooth weighted round-robin (the scheme nginx uses for upstreams): every pick adds each
candidate's weight to its running score, takes the highest score and subtracts the total from it.
With weights 1:90,2:10 every 10 consecutive picks hold exactly nine 1s and one 2, spread out
rather than bunched, and the sequence is the same on every run, which keeps tests exact.

Only versions that are READY and weighted above 0 are candidates. When none is, the caller falls
back to its usual choice (the highest READY version): routing must never fail a request.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping


class WeightedVersionRouter:
    """Picks versions in proportion to their weights; one per model, used on the hot path."""

    __slots__ = ("_scores", "weights")

    def __init__(self, weights: Mapping[int, int]) -> None:
        # Ascending versions, so ties always go to the lower version.
        self.weights = {version: weight for version, weight in sorted(weights.items()) if weight > 0}
        self._scores = dict.fromkeys(self.weights, 0)

    def pick(self, ready: Collection[int]) -> int | None:
        """The next version among `ready`, or None when no weighted version is ready."""
        total = 0
        best: int | None = None
        for version, weight in self.weights.items():
            if version not in ready:
                continue
            total += weight
            score = self._scores[version] + weight
            self._scores[version] = score
            if best is None or score > self._scores[best]:
                best = version
        if best is not None:
            self._scores[best] -= total
        return best
