"""Keep large tensor buffers in the heap instead of fresh mmap()s (glibc only).

Why: glibc serves allocations above M_MMAP_THRESHOLD (128 KiB at start, adjusted dynamically)
with a new mmap and returns them with munmap on free. A 600 KB image request allocates and frees
several such buffers (socket reads, frames, protobuf fields, outputs), and each new mapping costs a
page fault and a zeroed page per 4 KiB: `perf record` on the P3 gRPC path showed ~35% of the main
process in the kernel's fault and page-clearing paths. Raising the mmap threshold and the trim
threshold lets freed buffers be reused from the heap. The price: up to `trim` bytes of freed heap
stay with the process after a burst (no leak; it is reused), as with jemalloc/tcmalloc-based servers.

The usual glibc variables (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_) win when set: nothing is
changed then. Elsewhere (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's maximum for the dynamic threshold (64-bit)
TRIM_THRESHOLD = 256 << 20


def keep_large_buffers_in_heap() -> bool:
    """Apply the thresholds; True when glibc took them."""
    if not sys.platform.startswith("linux"):
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
