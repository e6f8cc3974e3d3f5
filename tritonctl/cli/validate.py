"""`tritonctl validate REPO...`: check model repositories the way the server will load them.

Exit codes: 0 valid (warnings allowed), 1 errors found (or warnings with --strict),
2 usage error (no such repository, bad option).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer


class ReportFormat(str, Enum):
    text = "text"
    json = "json"
    github = "github"
    junit = "junit"


DEFAULT_JUNIT_FILE = Path("tritonctl-validate.xml")

Repositories = Annotated[
    list[Path],
    typer.Argument(
        help="Model repository folders to check.",
        metavar="REPO...",
        exists=True,
        file_okay=False,
        dir_okay=True,
        show_default=False,
    ),
]
FormatOption = Annotated[
    ReportFormat,
    typer.Option(
        "--format",
        "-f",
        help="text for people, json for tools, github for PR annotations, junit for a CI report file.",
        case_sensitive=False,
    ),
]
StrictOption = Annotated[bool, typer.Option("--strict", help="Fail (exit 1) on warnings too.")]
CheckModelsOption = Annotated[
    bool,
    typer.Option(
        "--check-models/--no-check-models",
        help="Also compare each model file with its config (ONNX graph, TorchScript load, model.py).",
    ),
]
ServerConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--server-config",
        help="Server-level config file (default: REPO/config.pbtxt when present).",
        exists=True,
        dir_okay=False,
        show_default=False,
    ),
]
OutputOption = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        help=f"Write the report to this file (junit default: {DEFAULT_JUNIT_FILE}).",
        dir_okay=False,
        show_default=False,
    ),
]


def validate(
    repositories: Repositories,
    *,
    report_format: FormatOption = ReportFormat.text,
    strict: StrictOption = False,
    check_models: CheckModelsOption = True,
    server_config: ServerConfigOption = None,
    output: OutputOption = None,
) -> None:
    """Check model repositories: layout, config schema, semantics and model files.

    Exit 0 when valid, 1 when errors are found (or warnings with --strict), 2 on usage errors.
    """
    from server.errors import ConfigError
    from server.repository.validate import validate_repository
    from tritonctl.reports import FORMATS, failed

    try:
        reports = [
            validate_repository(root, server_config, check_models=check_models) for root in repositories
        ]
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    rendered = FORMATS[report_format.value](reports, strict)
    if output is None and report_format is ReportFormat.junit:
        output = DEFAULT_JUNIT_FILE
    if output is not None:
        output.write_text(rendered, encoding="utf-8")
        typer.echo(f"report written to {output}", err=True)
    else:
        typer.echo(rendered, nl=False)
    raise typer.Exit(1 if failed(reports, strict) else 0)


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
