"""Imports inside `server/` run one way: protocol -> core -> workers -> backends -> ground floor.

The ground floor (`server/vocabulary/`, `server/repository/`, `server/errors.py` and a few leaf
modules) is what every floor shares and imports nothing above it. `tritonctl/` may use the ground
floor anywhere, the rest of `server/` only where a command runs the server; `server/` never imports
`tritonctl/`. Every import is parsed, including those inside functions and `TYPE_CHECKING` blocks:
a lazy import that runs upward is still a dependency that runs upward.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

GROUND, BACKENDS, WORKERS, CORE, PROTOCOL, TOP = range(6)

# Longest prefix wins.
FLOORS: dict[str, int] = {
    "server.vocabulary": GROUND,
    "server.repository": GROUND,
    "server.errors": GROUND,
    "server.malloc_tuning": GROUND,
    "server.open_files": GROUND,
    "server.backends": BACKENDS,
    "server.workers": WORKERS,
    "server.core": CORE,
    "server.protocol": PROTOCOL,
    "server.metrics": PROTOCOL,  # a front end: the Prometheus endpoint on :8002
    "server.options": GROUND,  # the server's flags: `tritonctl serve`/`deploy` parse them too
    "server.app": TOP,
    "server.__main__": TOP,
}
PACKAGE_ROOT_FLOOR = GROUND  # `server/__init__.py`: the version string

# tritonctl modules that may reach past the ground floor, with the reason.
TRITONCTL_ALLOWED: dict[str, str] = {
    "server.app": "`tritonctl serve` runs the server",
    "server.backends.python": "`config generate --allow-python` runs a model.py's auto_complete_config",
}


def floor_of(module: str) -> int:
    if module == "server":
        return PACKAGE_ROOT_FLOOR
    best = ""
    for prefix in FLOORS:
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    if not best:
        raise AssertionError(f"{module} belongs to no floor: add it to FLOORS")
    return FLOORS[best]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import of `server` or `tritonctl` in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            # `from server.core import stats` imports the module server.core.stats.
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.append((node.lineno, candidate if _is_module(candidate) else target))
    ours = {(line, name) for line, name in found if name.split(".")[0] in {"server", "tritonctl"}}
    return sorted(ours)


def _is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def python_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def test_every_server_module_has_a_floor() -> None:
    for path in python_files("server"):
        floor_of(module_name(path))


def test_server_imports_run_one_way() -> None:
    upward: list[str] = []
    for path in python_files("server"):
        importer = module_name(path)
        own = floor_of(importer)
        for line, imported in imported_modules(path):
            where = f"{path.relative_to(ROOT)}:{line} imports {imported}"
            if imported.startswith("tritonctl"):
                upward.append(f"{where} (server/ never imports tritonctl/)")
            elif floor_of(imported) > own:
                upward.append(where)
    assert not upward, "imports that run back up:\n" + "\n".join(upward)


def test_ground_floor_stays_light_for_tritonctl() -> None:
    """tritonctl/ uses the ground floor; the rest of server/ only where a command runs the server."""
    found: list[str] = []
    for path in python_files("tritonctl"):
        for line, imported in imported_modules(path):
            if not imported.startswith("server") or floor_of(imported) == GROUND:
                continue
            if any(
                imported == allowed or imported.startswith(allowed + ".") for allowed in TRITONCTL_ALLOWED
            ):
                continue
            found.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    assert not found, "tritonctl/ reaches past the ground floor:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("importer", "imported", "upward"),
    [
        ("server.workers.supervisor", "server.core.types", True),
        ("server.workers.supervisor", "server.vocabulary.types", False),
        ("server.core.dataplane", "server.workers.channel", False),
        ("server.vocabulary.types", "server.errors", False),
        ("server.repository.rules", "server.backends.base", True),
        ("server.options", "server.protocol.restricted", True),
        ("server.options", "server.vocabulary.restrictions", False),
    ],
)
def test_the_rule_itself(importer: str, imported: str, upward: bool) -> None:
    assert (floor_of(imported) > floor_of(importer)) is upward
