"""What ships: templates inside the package, the pre-commit hook definition."""

from __future__ import annotations

from pathlib import Path

import tomllib
import yaml

from tritonctl.repository.scaffold import TEMPLATE_NAMES, TEMPLATES_DIR

ROOT = Path(__file__).resolve().parents[3]


def test_templates_are_reachable_from_the_package() -> None:
    # tritonctl/templates links to the top-level templates/ so the wheel carries them as package data
    assert TEMPLATES_DIR.parent.name == "tritonctl"
    assert (ROOT / "tritonctl" / "templates").resolve() == (ROOT / "templates").resolve()
    for name in TEMPLATE_NAMES:
        assert (
            TEMPLATES_DIR / name / ("step_config.pbtxt.tmpl" if name == "ensemble" else "config.pbtxt.tmpl")
        ).exists()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "templates/**/*" in package_data["tritonctl"]


def test_pre_commit_hook_runs_validate() -> None:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    (hook,) = hooks
    assert hook["id"] == "tritonctl-validate"
    assert hook["entry"].startswith("tritonctl validate")
    assert hook["pass_filenames"] is False
