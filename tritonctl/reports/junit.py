"""JUnit XML: one test suite per repository, one test case per model; each error (and, with
--strict, each warning) is a <failure> of its model's case."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from server.repository.diagnostics import Diagnostic
from server.repository.validate import RepositoryReport


def _failure_text(diagnostic: Diagnostic) -> str:
    where = diagnostic.location()
    return f"{where}: {diagnostic.code}: {diagnostic.message}\nfix: {diagnostic.fix}"


def render_junit(reports: list[RepositoryReport], strict: bool) -> str:
    suites = ET.Element("testsuites", name="tritonctl validate")
    total_tests = total_failures = 0
    for report in reports:
        by_model: dict[str, list[Diagnostic]] = {name: [] for name in report.models}
        for diagnostic in report.diagnostics:
            by_model.setdefault(diagnostic.model or "<repository>", []).append(diagnostic)
        suite = ET.SubElement(suites, "testsuite", name=str(report.root))
        failures = 0
        for model, diagnostics in by_model.items():
            case = ET.SubElement(suite, "testcase", classname=str(report.root), name=model)
            notes = []
            for diagnostic in diagnostics:
                if diagnostic.is_error or strict:
                    failures += 1
                    failure = ET.SubElement(
                        case,
                        "failure",
                        message=f"{diagnostic.code}: {diagnostic.message}",
                        type=diagnostic.code,
                    )
                    failure.text = _failure_text(diagnostic)
                else:
                    notes.append(_failure_text(diagnostic))
            if notes:
                ET.SubElement(case, "system-out").text = "\n".join(notes)
        suite.set("tests", str(len(by_model)))
        suite.set("failures", str(failures))
        suite.set("errors", "0")
        total_tests += len(by_model)
        total_failures += failures
    suites.set("tests", str(total_tests))
    suites.set("failures", str(total_failures))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
