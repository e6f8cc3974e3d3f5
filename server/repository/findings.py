"""A collector of diagnostics about one model, each placed at a field path of its config."""

from __future__ import annotations

from pathlib import Path

from server.repository.diagnostics import Diagnostic, error, warning
from server.repository.schema import ConfigSource


class Findings:
    """Collects diagnostics about one model, each placed at a field path of its config."""

    def __init__(self, model: str, source: ConfigSource) -> None:
        self.model = model
        self.source = source
        self.items: list[Diagnostic] = []

    def error(self, code: str, path: str, message: str, fix: str) -> None:
        self.items.append(error(code, message, fix, model=self.model, **self.source.where(path)))

    def warning(self, code: str, path: str, message: str, fix: str) -> None:
        self.items.append(warning(code, message, fix, model=self.model, **self.source.where(path)))


def default_source(model_dir: Path | None) -> ConfigSource:
    """Positions from the folder's config.pbtxt when the caller has none at hand."""
    if model_dir is None:
        return ConfigSource("config.pbtxt")
    config_file = model_dir / "config.pbtxt"
    try:
        return ConfigSource(str(config_file), text=config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return ConfigSource(str(config_file))


def file_diagnostic(
    found: Findings, code: str, path: Path, message: str, fix: str, *, is_error: bool = True
) -> None:
    """A finding about a file or folder rather than a config field."""
    make = error if is_error else warning
    found.items.append(make(code, message, fix, file=str(path), model=found.model))
