"""`tritonctl --help` must start fast: no heavy library may be imported to print help."""

from __future__ import annotations

import subprocess
import sys
import time

HEAVY = ("torch", "onnxruntime", "onnx", "tensorrt", "matplotlib", "grpc")


def test_help_imports_no_heavy_library() -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "tritonctl", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    top_level = {name.split(".")[0] for name in imported}
    assert not top_level & set(HEAVY), f"imported at start-up: {sorted(top_level & set(HEAVY))}"
    assert "Usage" in result.stdout


def test_help_wall_clock_is_small() -> None:
    # The budget is 0.5 s on an idle machine; the bound is generous because CI shares its cores.
    best = min(_timed_help() for _ in range(3))
    assert best < 2.0, f"tritonctl --help took {best:.2f}s at best"


def _timed_help() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tritonctl", "--help"], capture_output=True, check=True, timeout=60)
    return time.perf_counter() - start
