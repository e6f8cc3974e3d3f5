"""Report formats of `tritonctl validate`: text for people, JSON for tools, GitHub annotations for
pull requests, JUnit XML for CI dashboards. Each formatter is a pure function of the reports."""

from __future__ import annotations

from collections.abc import Callable

from server.repository.validate import RepositoryReport
from tritonctl.reports.github import render_github
from tritonctl.reports.json_report import render_json
from tritonctl.reports.junit import render_junit
from tritonctl.reports.text import render_text

FORMATS: dict[str, Callable[[list[RepositoryReport], bool], str]] = {
    "text": render_text,
    "json": render_json,
    "github": render_github,
    "junit": render_junit,
}


def failed(reports: list[RepositoryReport], strict: bool) -> bool:
    """Errors fail a validation; with `strict`, warnings do too."""
    return any(r.errors or (strict and r.warnings) for r in reports)


__all__ = ["FORMATS", "failed", "render_github", "render_json", "render_junit", "render_text"]
