"""The glibc heap tuning: applied on Linux/glibc, left alone when the user set glibc's variables."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from server import malloc_tuning

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")

# A 1 MiB buffer is mmap()ed under default glibc settings: allocating, touching and freeing it
# again and again page-faults every time (~256 faults each). Tuned, the heap reuses it.
PROBE = """
import resource
from server.malloc_tuning import keep_large_buffers_in_heap
applied = keep_large_buffers_in_heap()
bytearray(1 << 20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    buffer = bytearray(1 << 20)
    del buffer
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _probe(env: dict[str, str]) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


def test_large_buffers_come_from_the_heap_once_tuned() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    applied, faults = _probe(env)
    assert applied
    assert faults < 1000  # mmap'ed, 50 buffers of 1 MiB fault ~12,800 times


def test_user_settings_win() -> None:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    applied, faults = _probe(env)
    assert not applied
    assert faults > 5000  # the user's threshold is in force: every buffer is a fresh mapping


def test_returns_false_off_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(malloc_tuning.sys, "platform", "darwin")
    assert malloc_tuning.keep_large_buffers_in_heap() is False
