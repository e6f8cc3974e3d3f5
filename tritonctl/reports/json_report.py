"""JSON report: {"ok": bool, "errors": [...], "warnings": [...]} with one object per finding."""

from __future__ import annotations

import json
from typing import Any

from server.repository.diagnostics import Diagnostic
from server.repository.validate import RepositoryReport


def diagnostic_to_dict(diagnostic: Diagnostic) -> dict[str, Any]:
    return {
        "model": diagnostic.model,
        "file": diagnostic.file,
        "line": diagnostic.line,
        "column": diagnostic.column,
        "code": diagnostic.code,
        "message": diagnostic.message,
        "fix": diagnostic.fix,
    }


def render_json(reports: list[RepositoryReport], strict: bool) -> str:
    errors = [diagnostic_to_dict(d) for r in reports for d in r.errors]
    warnings = [diagnostic_to_dict(d) for r in reports for d in r.warnings]
    document = {
        "ok": not errors and not (strict and warnings),
        "repositories": [str(r.root) for r in reports],
        "models": sum(len(r.models) for r in reports),
        "errors": errors,
        "warnings": warnings,
    }
    return json.dumps(document, indent=2) + "\n"
