"""Plain-text report: one block per finding (location, code, message, fix), then a summary."""

from __future__ import annotations

from server.repository.diagnostics import Diagnostic
from server.repository.validate import RepositoryReport


def format_diagnostic(diagnostic: Diagnostic) -> str:
    where = diagnostic.location() or diagnostic.model or "?"
    model = f" [{diagnostic.model}]" if diagnostic.model else ""
    return (
        f"{where}: {diagnostic.severity} {diagnostic.code}{model}: {diagnostic.message}\n"
        f"    fix: {diagnostic.fix}"
    )


def render_text(reports: list[RepositoryReport], strict: bool) -> str:
    lines: list[str] = []
    for report in reports:
        lines.extend(format_diagnostic(d) for d in report.diagnostics)
        errors, warnings = len(report.errors), len(report.warnings)
        if errors or (strict and warnings):
            verdict = "FAILED"
        else:
            verdict = "ok"
        counts = f"{len(report.models)} model(s), {errors} error(s), {warnings} warning(s)"
        lines.append(f"{report.root}: {counts} - {verdict}")
    return "\n".join(lines) + "\n"
