"""Validate a whole repository: scan, per-model rules, ensembles, and (optionally) model files.

`tritonctl validate` prints this; the server applies the same per-model rules at load time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from server.errors import ConfigError
from server.repository.diagnostics import Diagnostic
from server.repository.ensemble import check_ensembles
from server.repository.findings import Findings
from server.repository.loader import normalize_identity, scan_repository
from server.repository.model_files import check_model_files
from server.repository.rules import check_model_config
from server.repository.schema import ConfigSource
from server.repository.server_config import ServerConfig, find_server_config, load_server_config


@dataclass
class RepositoryReport:
    """What validating one repository found."""

    root: Path
    models: list[str] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if not d.is_error]


def _sort_key(diagnostic: Diagnostic) -> tuple[str, str, int, int, str]:
    return (
        diagnostic.model or "",
        diagnostic.file or "",
        diagnostic.line or 0,
        diagnostic.column or 0,
        diagnostic.code,
    )


def validate_repository(
    root: Path, server_config_path: Path | None = None, *, check_models: bool = True
) -> RepositoryReport:
    """Every diagnostic of the repository at `root` (a missing root is a ConfigError)."""
    if not root.is_dir():
        raise ConfigError(f"model repository {root} is not a directory")
    report = RepositoryReport(root)
    server_config: ServerConfig | None = None
    path = server_config_path or find_server_config(root)
    if path is not None:
        try:
            server_config = load_server_config(path)
        except ConfigError as exc:
            report.diagnostics.extend(exc.diagnostics)
    models = scan_repository(root, server_config)
    for name, entry in models.items():
        report.models.append(name)
        report.diagnostics.extend(entry.diagnostics)
        if entry.config is None or not entry.path.is_dir():
            continue
        source = entry.source or ConfigSource(entry.config_source)
        found = check_model_config(
            entry.config, entry.path, check_files=True, source=source, check_contents=check_models
        )
        report.diagnostics.extend(found)
        if check_models and not any(d.is_error for d in found):
            config = type(entry.config)()
            config.CopyFrom(entry.config)
            normalize_identity(config, name, entry.path)
            report.diagnostics.extend(check_model_files(config, entry.path, Findings(name, source)))
    report.diagnostics.extend(check_ensembles(models))
    report.diagnostics.sort(key=_sort_key)
    return report
