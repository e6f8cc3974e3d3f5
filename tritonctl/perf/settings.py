"""What a perf run is asked to do: load levels, measurement windows, inputs, and their parsing from flags.

Flag spellings follow perf_analyzer's (`--concurrency-range 1:8:2`, `--shape NAME:1,2`), so commands
carry over. Everything here is pure: the CLI builds a `PerfSettings` and the runner takes it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tritonctl.perf.errors import PerfUsageError

Protocol = Literal["grpc", "http"]
LoadMode = Literal["concurrency", "request_rate"]
Distribution = Literal["constant", "poisson"]

DEFAULT_PORTS = {"http": 8000, "grpc": 8001}
# perf_analyzer judges stability over this many consecutive windows.
STABILITY_WINDOWS = 3


@dataclass(frozen=True)
class LoadLevel:
    """One point of a sweep: a number of requests kept in flight, or a request rate per second."""

    mode: LoadMode
    value: float

    @property
    def label(self) -> str:
        if self.mode == "concurrency":
            return f"concurrency {int(self.value)}"
        return f"{self.value:g} req/s"


@dataclass(frozen=True)
class MeasurementSettings:
    """How one load level is measured (perf_analyzer's defaults where it has one)."""

    interval_ms: int = 5000
    request_count: int | None = None  # count windows: a window ends after this many requests
    stability_percentage: float = 10.0
    max_trials: int = 10
    warmup_ms: int = 500
    percentile: int | None = None  # stability judged on this latency percentile instead of the average


@dataclass(frozen=True)
class InputSettings:
    """Where request data comes from and how tensors are shaped."""

    source: str = "random"  # "random" | "zero" | path to perf_analyzer JSON | .npy file | folder of NAME.npy
    shapes: dict[str, list[int]] = field(default_factory=dict)
    datatypes: dict[str, str] = field(default_factory=dict)
    batch_size: int = 1
    seed: int = 0
    string_length: int = 16
    http_encoding: Literal["binary", "json"] = "binary"


@dataclass(frozen=True)
class PerfSettings:
    """A whole perf run."""

    model: str
    url: str
    protocol: Protocol = "grpc"
    model_version: str = ""
    levels: tuple[LoadLevel, ...] = (LoadLevel("concurrency", 1),)
    distribution: Distribution = "constant"
    latency_budget_ms: float | None = None
    measurement: MeasurementSettings = field(default_factory=MeasurementSettings)
    inputs: InputSettings = field(default_factory=InputSettings)
    workers: int = 1
    grpc_client: Literal["raw", "grpcio"] = "raw"
    # "system": tensors through client shared memory (perf_analyzer's --shared-memory; shared_memory.py)
    shared_memory: Literal["none", "system"] = "none"
    output_shared_memory_size: int = 100 * 1024
    # Stateful models (config sequence_batching): requests per sequence, and the ids used (sequences.py)
    sequence_length: int = 20
    sequence_id_range: tuple[int, int] = (1, 0)  # (start, end); end 0: unbounded


def auto_workers(levels: tuple[LoadLevel, ...]) -> int:
    """Load processes when the user does not say: several, because one asyncio process gets one
    thread's share of a crowded CPU (perf_analyzer runs a thread per context), but never more than
    the concurrency (idle processes only cost start-up time)."""
    want = max(2, min(4, (os.cpu_count() or 1) // 2))
    if levels and levels[0].mode == "concurrency":
        want = min(want, int(max(level.value for level in levels)))
    return max(1, want)


def normalize_url(url: str | None, protocol: Protocol) -> str:
    """`host:port` without a scheme; the default port follows the protocol like perf_analyzer's."""
    if not url:
        return f"127.0.0.1:{DEFAULT_PORTS[protocol]}"
    for scheme in ("http://", "https://", "grpc://"):
        if url.startswith(scheme):
            if scheme == "https://":
                raise PerfUsageError("TLS is not supported: use a plain http:// or host:port URL")
            url = url[len(scheme) :]
    url = url.rstrip("/")
    if "/" in url:
        raise PerfUsageError(f"URL {url!r}: give host:port only (no path)")
    if ":" not in url:
        url = f"{url}:{DEFAULT_PORTS[protocol]}"
    return url


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise PerfUsageError(f"{what}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise PerfUsageError(f"{what}: {text!r} is not a finite number")
    return value


def parse_range(text: str, mode: LoadMode) -> tuple[LoadLevel, ...]:
    """`START[:END[:STEP]]` -> levels; integers for concurrency, positive numbers for rates."""
    flag = "--concurrency-range" if mode == "concurrency" else "--request-rate-range"
    parts = text.split(":")
    if not 1 <= len(parts) <= 3 or any(not part.strip() for part in parts):
        raise PerfUsageError(f"{flag} {text!r}: expected START:END[:STEP], e.g. 1:8:1")
    numbers = [_number(part, flag) for part in parts]
    start = numbers[0]
    end = numbers[1] if len(numbers) > 1 else start
    step = numbers[2] if len(numbers) > 2 else 1.0
    if mode == "concurrency" and any(n != int(n) for n in numbers):
        raise PerfUsageError(f"{flag} {text!r}: concurrency values must be whole numbers")
    if start <= 0 or step <= 0:
        raise PerfUsageError(f"{flag} {text!r}: START and STEP must be greater than 0")
    if end < start:
        raise PerfUsageError(f"{flag} {text!r}: END must not be smaller than START")
    count = math.floor((end - start) / step + 1e-9) + 1
    if count > 1000:
        raise PerfUsageError(f"{flag} {text!r}: {count} levels is too many (at most 1000)")
    return tuple(LoadLevel(mode, round(start + i * step, 9)) for i in range(count))


def parse_shape(text: str) -> tuple[str, list[int]]:
    """`NAME:d1,d2,...` (perf_analyzer's --shape)."""
    name, sep, dims_text = text.rpartition(":")
    if not sep or not name:
        raise PerfUsageError(f"--shape {text!r}: expected NAME:DIMS, e.g. INPUT0:3,224,224")
    try:
        dims = [int(d) for d in dims_text.split(",")] if dims_text else []
    except ValueError:
        raise PerfUsageError(
            f"--shape {text!r}: dimensions must be whole numbers separated by commas"
        ) from None
    if any(d < 0 for d in dims):
        raise PerfUsageError(f"--shape {text!r}: dimensions must not be negative")
    return name, dims


def parse_datatype(text: str) -> tuple[str, str]:
    """`NAME:DTYPE` with a KServe v2 datatype name (FP32, INT64, BYTES, ...)."""
    from server.vocabulary.dtypes import WIRE_TO_NUMPY

    name, sep, dtype = text.rpartition(":")
    dtype = dtype.upper().removeprefix("TYPE_")
    if dtype == "STRING":
        dtype = "BYTES"
    if not sep or not name:
        raise PerfUsageError(f"--dtype {text!r}: expected NAME:DATATYPE, e.g. INPUT0:FP32")
    if dtype not in WIRE_TO_NUMPY:
        known = ", ".join(sorted(WIRE_TO_NUMPY))
        raise PerfUsageError(f"--dtype {text!r}: unknown datatype (one of {known})")
    return name, dtype


def check_input_source(source: str) -> str:
    if source in ("random", "zero"):
        return source
    path = Path(source)
    if not path.exists():
        raise PerfUsageError(
            f"--input-data {source!r}: expected random, zero, a JSON file, a .npy file or a folder"
        )
    return source
