"""pb_utils.MetricFamily and its Metric: custom metrics of a python model, Triton's API.

    family = pb_utils.MetricFamily(name="requests", description="...", kind=pb_utils.MetricFamily.COUNTER)
    metric = family.Metric(labels={"model": "m"})         # HISTOGRAM: buckets=[...] too
    metric.increment(1); metric.set(2.5); metric.value(); metric.observe(0.3)

Values live in an array of float64 the instance shares with the server (workers/custom_metrics.py
has the layout); the first Metric of a family registers it and the server exports it on the
metrics port with the other metrics. `value()` is this instance's own value.
"""

from __future__ import annotations

import bisect
import mmap
import os
import threading
import time
from collections.abc import Callable
from typing import Any

COUNTER, GAUGE, HISTOGRAM = 0, 1, 2
VALUE_SLOTS = 1 << 16  # float64 values per instance


def slot_count(kind: int, buckets: list[float]) -> int:
    if kind == HISTOGRAM:
        return len(buckets) + 3
    return 2 if kind == GAUGE else 1


class MetricValues:
    """An instance's metric values, and their registrations until a server end takes them.

    `shared`: in a memory file whose descriptor the worker hands to the server (`fd`), so the
    server reads the values where the model writes them; else plain memory (in-process)."""

    def __init__(self, shared: bool) -> None:
        size = VALUE_SLOTS * 8
        self.fd = os.memfd_create("tritonctl_metrics", os.MFD_CLOEXEC) if shared else -1
        if self.fd >= 0:
            os.ftruncate(self.fd, size)
            self._buffer: Any = mmap.mmap(self.fd, size)
        else:
            self._buffer = bytearray(size)
        self.view = memoryview(self._buffer).cast("d")
        self._next = 0
        self._pending: list[dict[str, Any]] = []
        self._forward: Callable[[dict[str, Any]], None] | None = None
        self._lock = threading.Lock()

    def register(
        self, name: str, description: str, kind: int, labels: dict[str, str], buckets: list[float]
    ) -> int:
        with self._lock:
            width = slot_count(kind, buckets)
            if self._next + width > VALUE_SLOTS:
                raise ValueError(f"more than {VALUE_SLOTS} custom metric values in one instance")
            slot = self._next
            self._next += width
            record = {"n": name, "d": description, "k": kind, "l": labels, "b": buckets, "s": slot}
            if self._forward is not None:
                self._forward(record)
            else:
                self._pending.append(record)
        return slot

    def connect(self, forward: Callable[[dict[str, Any]], None]) -> None:
        """From now on registrations go to `forward`, those made so far first."""
        with self._lock:
            for record in self._pending:
                forward(record)
            self._pending.clear()
            self._forward = forward


class MetricFamily:
    COUNTER = COUNTER
    GAUGE = GAUGE
    HISTOGRAM = HISTOGRAM

    def __init__(self, name: str, description: str, kind: int) -> None:
        from server.backends.python import triton_python_backend_utils as pb

        if kind not in (COUNTER, GAUGE, HISTOGRAM):
            raise pb.TritonModelException(f"unknown metric kind {kind!r}: use COUNTER, GAUGE or HISTOGRAM")
        if not name or not all(c.isalnum() or c in "_:" for c in name) or name[0].isdigit():
            raise pb.TritonModelException(f"invalid metric family name '{name}'")
        self._name = name
        self._description = description
        self._kind = kind
        self._exception = pb.TritonModelException
        self._values: Callable[[], Any] = pb._metric_values

    def Metric(  # Triton's name
        self, labels: dict[str, str] | None = None, buckets: list[float] | None = None
    ) -> Metric:
        if self._kind == HISTOGRAM:
            if not buckets:
                raise self._exception("a histogram metric needs its buckets")
            if list(buckets) != sorted(buckets):
                raise self._exception("histogram buckets must be in increasing order")
        elif buckets is not None:
            raise self._exception("only histogram metrics take buckets")
        values: MetricValues | None = self._values()
        if values is None:
            raise self._exception("custom metrics are only available inside a model instance")
        labels = {str(k): str(v) for k, v in (labels or {}).items()}
        try:
            slot = values.register(self._name, self._description, self._kind, labels, list(buckets or ()))
        except ValueError as exc:
            raise self._exception(str(exc)) from None
        return Metric(self._kind, values.view, slot, list(buckets or ()), self._exception)


class Metric:
    def __init__(
        self, kind: int, values: Any, slot: int, buckets: list[float], exception: type[Exception]
    ) -> None:
        self._kind = kind
        self._values = values
        self._slot = slot
        self._buckets = buckets
        self._exception = exception

    def increment(self, value: float) -> None:
        if self._kind == HISTOGRAM:
            raise self._exception("increment is not supported on a histogram metric: use observe")
        if self._kind == COUNTER and value < 0:
            raise self._exception("a counter can only be incremented by a non-negative value")
        self._values[self._slot] += float(value)
        if self._kind == GAUGE:
            self._values[self._slot + 1] = time.monotonic()

    def set(self, value: float) -> None:
        if self._kind != GAUGE:
            raise self._exception("set is only supported on a gauge metric")
        self._values[self._slot] = float(value)
        self._values[self._slot + 1] = time.monotonic()

    def value(self) -> float:
        if self._kind == HISTOGRAM:
            raise self._exception("value is not supported on a histogram metric")
        return float(self._values[self._slot])

    def observe(self, value: float) -> None:
        if self._kind != HISTOGRAM:
            raise self._exception("observe is only supported on a histogram metric")
        index = bisect.bisect_left(self._buckets, value)  # le: a value equal to a bound counts in it
        base = self._slot
        self._values[base + index] += 1.0
        self._values[base + len(self._buckets) + 1] += float(value)
        self._values[base + len(self._buckets) + 2] += 1.0
