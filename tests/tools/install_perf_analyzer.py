"""Install the real perf_analyzer 2.51 into its own venv (recipe: docs/PEERS.md).

The PyPI `perf-analyzer` package is an empty placeholder; the binary ships in tritonclient 2.51
wheels and needs libb64 (Debian: libb64-0d) and the CUDA runtime library (loaded, never used
without a GPU). Idempotent: a second run only checks that the binary starts.
Usage: python tests/tools/install_perf_analyzer.py .tools/pa
"""

from __future__ import annotations

import ctypes.util
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path


def library_path(venv_dir: Path) -> str:
    found = sorted(venv_dir.glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib"))
    return str(found[0]) if found else ""


def binary_works(venv_dir: Path) -> bool:
    binary = venv_dir / "bin" / "perf_analyzer"
    if not binary.exists():
        return False
    env = dict(os.environ, LD_LIBRARY_PATH=library_path(venv_dir))
    probe = subprocess.run([str(binary), "--version"], env=env, capture_output=True, text=True, check=False)
    return "Perf Analyzer Version" in probe.stdout + probe.stderr


def ensure_libb64() -> None:
    if ctypes.util.find_library("b64"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print("perf_analyzer needs libb64 (Debian: apt-get install libb64-0d); not root, skipping")
        return
    subprocess.run(["apt-get", "update", "-qq"], check=False, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", "libb64-0d"], check=True, stdout=subprocess.DEVNULL)


def main() -> int:
    venv_dir = Path(sys.argv[1] if len(sys.argv) > 1 else ".tools/pa")
    if binary_works(venv_dir):
        return 0
    ensure_libb64()
    venv.create(venv_dir, with_pip=True)
    pip = [str(venv_dir / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "tritonclient==2.51.0", "nvidia-cuda-runtime-cu12"], check=True)
    if not binary_works(venv_dir):
        print(f"perf_analyzer in {venv_dir} does not start; its tests will be skipped outside CI")
        return 0 if not os.environ.get("CI") else 1
    print(f"perf_analyzer ready in {venv_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
