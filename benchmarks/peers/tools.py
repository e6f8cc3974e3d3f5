"""Install (once) and locate the real peers, each in its own venv under the ignored `.tools/`.

Recipes: docs/PEERS.md. perf_analyzer 2.51 ships inside tritonclient 2.51 wheels; the real Triton
2.51 is the one nvidia-pytriton bundles (python backend only, so it gets onnxruntime beside it for
the ONNX-through-model.py wrapper); MLServer 1.7 needs uvloop 0.21 (0.22 kills its workers).
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools"
PA_VENV = TOOLS / "pa"
TRITON_VENV = TOOLS / "triton"
MLSERVER_VENV = TOOLS / "mlserver"

TRITON_PACKAGES = ["nvidia-pytriton", "onnxruntime", "numpy<2"]
MLSERVER_PACKAGES = ["mlserver==1.7.1", "uvloop==0.21.0"]


class SetupError(RuntimeError):
    """A peer could not be installed or found."""


@dataclass(frozen=True)
class Tools:
    """Where every peer lives once installed."""

    perf_analyzer: Path
    perf_analyzer_libs: Path
    triton_venv: Path
    mlserver: Path  # the `mlserver` console script
    ours_code: Path = ROOT  # where `python -m server` / `-m tritonctl` run from (a HEAD snapshot by default)


def _site_packages(venv_dir: Path) -> Path:
    found = sorted(venv_dir.glob("lib/python3*/site-packages"))
    if not found:
        raise SetupError(f"{venv_dir} is not a virtual environment")
    return found[0]


def _pip_install(venv_dir: Path, packages: list[str]) -> None:
    if not (venv_dir / "bin" / "python").exists():
        venv.create(venv_dir, with_pip=True)
    print(f"[setup] pip install {' '.join(packages)} into {venv_dir.relative_to(ROOT)}", file=sys.stderr)
    command = [str(venv_dir / "bin" / "python"), "-m", "pip", "install", "-q", *packages]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SetupError(f"pip install {packages} failed:\n{done.stderr[-3000:]}")


def ensure_tools(install: bool = True) -> Tools:
    """Find every peer, installing what is missing when `install` (idempotent, minutes the first time)."""
    if install:
        script = ROOT / "tests" / "tools" / "install_perf_analyzer.py"
        subprocess.run([sys.executable, str(script), str(PA_VENV)], check=True)
    sys.path.insert(0, str(ROOT))
    from tests.tools.real_triton import find_real_triton

    if find_real_triton(TRITON_VENV) is None:
        if not install:
            raise SetupError(f"the real Triton is missing under {TRITON_VENV} (run without --no-setup)")
        _pip_install(TRITON_VENV, TRITON_PACKAGES)
    mlserver = MLSERVER_VENV / "bin" / "mlserver"
    if not mlserver.exists():
        if not install:
            raise SetupError(f"MLServer is missing under {MLSERVER_VENV} (run without --no-setup)")
        _pip_install(MLSERVER_VENV, MLSERVER_PACKAGES)
    libs = _site_packages(PA_VENV) / "nvidia" / "cuda_runtime" / "lib"
    tools = Tools(PA_VENV / "bin" / "perf_analyzer", libs, TRITON_VENV, mlserver)
    if not tools.perf_analyzer.exists():
        raise SetupError("perf_analyzer is missing: run `make perf-analyzer`")
    return tools


def _package_version(venv_dir: Path, package: str) -> str:
    command = [
        str(venv_dir / "bin" / "python"),
        "-c",
        f"import importlib.metadata as m; print(m.version({package!r}))",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    return done.stdout.strip() or "?"


def versions(tools: Tools) -> dict[str, str]:
    """Versions of everything measured, for the record."""
    env = dict(os.environ, LD_LIBRARY_PATH=str(tools.perf_analyzer_libs))
    probe = subprocess.run(
        [str(tools.perf_analyzer), "--version"], capture_output=True, text=True, env=env, check=False
    )
    found = re.search(r"Version (\S+)", probe.stdout + probe.stderr)
    pa_version = found.group(1) if found else "?"
    ours = ROOT / ".venv"
    return {
        "perf_analyzer": pa_version,
        "nvidia-pytriton (tritonserver 2.51.0)": _package_version(tools.triton_venv, "nvidia-pytriton"),
        "mlserver": _package_version(MLSERVER_VENV, "mlserver"),
        "uvloop (mlserver)": _package_version(MLSERVER_VENV, "uvloop"),
        "onnxruntime (ours)": _package_version(ours, "onnxruntime"),
        "onnxruntime (triton)": _package_version(tools.triton_venv, "onnxruntime"),
        "grpcio (ours)": _package_version(ours, "grpcio"),
        "python": platform.python_version(),
    }


def machine_facts() -> dict[str, str]:
    """Cores, CPU model, memory and OS of this machine."""
    cpu_model = "?"
    with Path("/proc/cpuinfo").open() as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    os_name = platform.platform()
    release = Path("/etc/os-release")
    if release.exists():
        for line in release.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    return {
        "cores": str(os.cpu_count()),
        "cpu": cpu_model,
        "memory": f"{memory_gib:.0f} GiB",
        "os": os_name,
    }


def snapshot_head(destination: Path, rev: str = "HEAD") -> str:
    """Export `rev`'s (HEAD's) `server/` and `tritonctl/` into `destination`; returns its short hash.

    The checkout is shared and others edit server code while a run lasts: measuring committed
    code keeps every sample of a run on the same code, and names it exactly. An older `rev` gives
    the "before" of a before/after comparison, measured against the same peers."""
    destination.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev, "server", "tritonctl"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(destination)], input=archive.stdout, check=True)
    head = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return head.stdout.strip()


def commit() -> str:
    """HEAD's short hash, with `+dirty` when tracked files differ from it."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    dirty = subprocess.run(
        ["git", "diff", "--quiet", "HEAD", "--", "server", "tritonctl"], cwd=ROOT, check=False
    )
    return head.stdout.strip() + ("+dirty" if dirty.returncode else "")
