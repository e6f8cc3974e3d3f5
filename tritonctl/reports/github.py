"""GitHub Actions workflow commands: `::error file=F,line=L,col=C,title=CODE::message`, which show
up as annotations on the pull request's lines."""

from __future__ import annotations

from server.repository.diagnostics import Diagnostic
from server.repository.validate import RepositoryReport


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation(diagnostic: Diagnostic) -> str:
    properties = []
    if diagnostic.file:
        properties.append(f"file={_escape_property(diagnostic.file)}")
    if diagnostic.line is not None:
        properties.append(f"line={diagnostic.line}")
    if diagnostic.column is not None:
        properties.append(f"col={diagnostic.column}")
    properties.append(f"title={_escape_property(diagnostic.code)}")
    command = "error" if diagnostic.is_error else "warning"
    message = f"{diagnostic.message} (fix: {diagnostic.fix})"
    return f"::{command} {','.join(properties)}::{_escape_data(message)}"


def render_github(reports: list[RepositoryReport], strict: bool) -> str:
    lines = [annotation(d) for r in reports for d in r.diagnostics]
    errors = sum(len(r.errors) for r in reports)
    warnings = sum(len(r.warnings) for r in reports)
    lines.append(f"tritonctl validate: {errors} error(s), {warnings} warning(s)")
    return "\n".join(lines) + "\n"
