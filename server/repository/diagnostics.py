"""One finding about a model repository: what is wrong, where, and how to fix it.

The same `Diagnostic` objects are printed by `tritonctl validate` and carried by the `ConfigError`
the server raises when it refuses to load a model, so both say exactly the same thing.
Codes are stable: `E…` are errors, `W…` warnings; the number groups the kind of problem
(1xx syntax/schema, 2xx layout, 3xx semantics, 4xx ensembles, 5xx model files).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Diagnostic:
    """A problem found in a configuration or a repository layout."""

    code: str
    severity: str
    message: str
    fix: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    model: str | None = None

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def location(self) -> str:
        """`file:line:col` with whatever parts are known ("" when none is)."""
        parts = [self.file or ""]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts) if parts != [""] else ""

    def with_model(self, model: str) -> Diagnostic:
        return self if self.model == model else replace(self, model=model)

    def __str__(self) -> str:
        where = self.location()
        prefix = f"{where}: " if where else ""
        return f"{prefix}{self.severity} {self.code}: {self.message} (fix: {self.fix})"


def error(
    code: str,
    message: str,
    fix: str,
    *,
    file: str | None = None,
    line: int | None = None,
    column: int | None = None,
    model: str | None = None,
) -> Diagnostic:
    return Diagnostic(code, ERROR, message, fix, file, line, column, model)


def warning(
    code: str,
    message: str,
    fix: str,
    *,
    file: str | None = None,
    line: int | None = None,
    column: int | None = None,
    model: str | None = None,
) -> Diagnostic:
    return Diagnostic(code, WARNING, message, fix, file, line, column, model)


def summarize(diagnostics: list[Diagnostic]) -> str:
    """The message of a ConfigError that carries these diagnostics: every error, one per line."""
    errors = [d for d in diagnostics if d.is_error] or diagnostics
    return "\n".join(str(d) for d in errors)
