"""completions/: generated from the CLI; stale scripts fail here (fix: `make completions`)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPTS = ROOT / "completions"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("completions_generate", SCRIPTS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being created
    spec.loader.exec_module(module)
    return module


def test_completion_scripts_are_up_to_date() -> None:
    stale = _generator().stale_files()
    assert not stale, (
        f"stale completion scripts: {', '.join(p.name for p in stale)}. "
        "The CLI changed: run `make completions` and commit completions/."
    )


def test_tree_covers_the_commands_and_choices() -> None:
    root = _generator().command_tree()
    assert {"init", "validate", "config"} <= set(root.children)
    assert set(root.children["config"].children) == {"generate", "show"}
    formats = next(o for o in root.children["validate"].options if "--format" in o.names)
    assert formats.choices == ["text", "json", "github", "junit"]


def _bash_complete(words: list[str]) -> list[str]:
    line = " ".join(f'"{w}"' for w in words)
    script = (
        f"source {SCRIPTS / 'tritonctl.bash'}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; "
        '_tritonctl; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True, timeout=30)
    return [w for w in result.stdout.splitlines() if w]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completes_commands_options_and_choices() -> None:
    assert _bash_complete(["tritonctl", "config", ""]) == ["generate", "show"]
    assert _bash_complete(["tritonctl", "validate", "--format", ""]) == ["text", "json", "github", "junit"]
    assert "--strict" in _bash_complete(["tritonctl", "validate", "--s"])
    assert "--template" in _bash_complete(["tritonctl", "init", "repo", "--t"])


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_script_parses() -> None:
    subprocess.run(["zsh", "-n", str(SCRIPTS / "tritonctl.zsh")], check=True, timeout=30)


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_script_parses() -> None:
    subprocess.run(["fish", "-n", str(SCRIPTS / "tritonctl.fish")], check=True, timeout=30)
