"""Custom metrics of python models (pb_utils.MetricFamily) as the main process exports them.

Each model instance keeps its metrics' values in an array of float64 of its own: a worker process
in a shared-memory segment it hands over once (side.py, op "metric"), an in-process instance in
plain memory. A metric is registered once per instance with its slots in that array; nothing
travels per update. A scrape (server/metrics.py) reads every instance's values and merges the
instances that own the same family and labels: counters and histograms are summed (as Triton's
one shared metric object would count them), a gauge shows the value its instances wrote last.

Slots per metric: counter 1 (value); gauge 2 (value, time written); histogram len(buckets) + 3
(a count per bucket and +Inf, not cumulative; sum; count).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from server.backends.python.custom_metrics import COUNTER, GAUGE, HISTOGRAM, slot_count

KIND_NAMES = {COUNTER: "counter", GAUGE: "gauge", HISTOGRAM: "histogram"}


@dataclass(slots=True)
class MetricEntry:
    family: str
    labels: tuple[tuple[str, str], ...]
    kind: int
    slot: int
    buckets: tuple[float, ...] = ()


@dataclass(eq=False)
class MetricSource:
    """One instance's values (`values`: a float64 memoryview) and the metrics laid out in them."""

    values: Any
    entries: list[MetricEntry] = field(default_factory=list)


@dataclass(slots=True)
class Family:
    name: str
    description: str
    kind: int


class CustomMetricStore:
    def __init__(self) -> None:
        self.families: dict[str, Family] = {}
        self.sources: list[MetricSource] = []
        self._lock = threading.Lock()  # in-process instances register from their threads

    def register(
        self,
        source: MetricSource,
        *,
        name: str,
        description: str,
        kind: int,
        labels: dict[str, str],
        buckets: list[float] | None,
        slot: int,
    ) -> None:
        with self._lock:
            family = self.families.get(name)
            if family is None:
                self.families[name] = Family(name, description, kind)
            if source not in self.sources:
                self.sources.append(source)
            source.entries.append(
                MetricEntry(name, tuple(sorted(labels.items())), kind, slot, tuple(buckets or ()))
            )

    def remove(self, source: MetricSource) -> None:
        with self._lock:
            if source in self.sources:
                self.sources.remove(source)

    def collect(self) -> Iterator[tuple[Family, list[tuple[str, dict[str, str], float]]]]:
        """Each family with its samples (sample name, labels, value), instances merged."""
        merged: dict[tuple[str, tuple[tuple[str, str], ...]], list[float]] = {}
        kinds: dict[tuple[str, tuple[tuple[str, str], ...]], MetricEntry] = {}
        with self._lock:
            for source in self.sources:
                values = source.values
                for entry in source.entries:
                    key = (entry.family, entry.labels)
                    width = slot_count(entry.kind, list(entry.buckets))
                    current = [float(values[entry.slot + i]) for i in range(width)]
                    previous = merged.get(key)
                    kinds[key] = entry
                    if previous is None:
                        merged[key] = current
                    elif entry.kind == GAUGE:
                        if current[1] > previous[1]:
                            merged[key] = current
                    else:
                        merged[key] = [a + b for a, b in zip(previous, current, strict=True)]
            families = dict(self.families)
        by_family: dict[str, list[tuple[str, dict[str, str], float]]] = {}
        for (name, labels), values in merged.items():
            entry = kinds[(name, labels)]
            samples = by_family.setdefault(name, [])
            base = dict(labels)
            if entry.kind != HISTOGRAM:
                samples.append((name, base, values[0]))
                continue
            cumulative = 0.0
            for bound, count in zip([*entry.buckets, float("inf")], values, strict=False):
                cumulative += count
                le = "+Inf" if bound == float("inf") else _number(bound)
                samples.append((f"{name}_bucket", {**base, "le": le}, cumulative))
            samples.append((f"{name}_sum", base, values[-2]))
            samples.append((f"{name}_count", base, values[-1]))
        for name, samples in by_family.items():
            yield families[name], samples


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


STORE = CustomMetricStore()
