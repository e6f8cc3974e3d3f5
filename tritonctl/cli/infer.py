"""`tritonctl infer MODEL --input NAME=VALUE...`: one inference against any Triton-compatible server.

VALUE is a `.npy` file, a JSON file or a JSON literal (`[[1, 2, 3]]`); datatypes and shapes come
from the model's metadata. Exit codes: 0 answered, 1 the server refused or failed (message on
stderr), 2 usage error.
"""

from __future__ import annotations

import json
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from tritonctl.client import InferAnswer


class OutputFormat(str, Enum):
    table = "table"
    json = "json"


class Protocol(str, Enum):
    http = "http"
    grpc = "grpc"


UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        "-u",
        help="Server address host:port (default 127.0.0.1:8000 for http, 127.0.0.1:8001 for grpc).",
        envvar="TRITONCTL_URL",
        show_default=False,
    ),
]
ProtocolOption = Annotated[
    Protocol, typer.Option("--protocol", "-i", help="Protocol to speak.", case_sensitive=False)
]
VersionOption = Annotated[
    str, typer.Option("--version", "-v", help="Model version (default: the server's choice).")
]
FormatOption = Annotated[
    OutputFormat,
    typer.Option("--format", "-f", help="table for people, json for tools.", case_sensitive=False),
]


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def infer(
    model: Annotated[str, typer.Argument(help="Model name.", show_default=False)],
    *,
    inputs: Annotated[
        list[str],
        typer.Option(
            "--input",
            "-I",
            help="NAME=VALUE, VALUE a .npy file, a .json file or a JSON literal; once per input.",
            show_default=False,
        ),
    ],
    url: UrlOption = None,
    protocol: ProtocolOption = Protocol.http,
    version: VersionOption = "",
    outputs: Annotated[
        list[str] | None,
        typer.Option(
            "--output", "-o", help="Output to return (repeatable; default: all).", show_default=False
        ),
    ] = None,
    output_format: FormatOption = OutputFormat.table,
    stream: Annotated[
        bool,
        typer.Option(
            "--stream",
            help="Stream the responses (HTTP generate_stream, for decoupled models): one JSON line each.",
        ),
    ] = False,
) -> None:
    """Run one inference and print the outputs."""
    from server.errors import ServerError
    from tritonctl.client import TritonConnection, build_inputs

    if stream:
        _stream(model, inputs, url, protocol, version)
        return

    try:
        with TritonConnection(url, protocol.value) as connection:
            signature = connection.signature(model, version)
            tensors = build_inputs(signature, inputs)
            answer = connection.infer(model, tensors, outputs, version)
    except ServerError as exc:
        raise fail(str(exc)) from None
    if output_format is OutputFormat.json:
        typer.echo(json.dumps(answer.to_json()))
    else:
        print_table(answer)


def _stream(model: str, inputs: list[str], url: str | None, protocol: Protocol, version: str) -> None:
    """Each response of generate_stream as one JSON line, printed as it arrives."""
    from server.errors import ServerError
    from tritonctl.client.stream import generate_body, generate_stream

    if protocol is not Protocol.http:
        raise fail("--stream uses the HTTP generate_stream endpoint: drop --protocol grpc")
    try:
        for event in generate_stream(url, model, generate_body(inputs), version):
            typer.echo(json.dumps(event))
    except ServerError as exc:
        raise fail(str(exc)) from None


def print_table(answer: InferAnswer) -> None:
    import numpy as np
    from rich.table import Table

    from tritonctl.cli import tables

    table = Table(title=f"{answer.model_name} (version {answer.model_version})")
    for column in ("output", "datatype", "shape", "values"):
        table.add_column(column)
    with np.printoptions(threshold=64, edgeitems=4, linewidth=100):
        for output in answer.outputs:
            values = output.to_json()["data"]
            text = str(np.array(values, dtype=object if output.datatype == "BYTES" else None))
            table.add_row(output.name, output.datatype, str(output.shape), text)
    tables.print_table(table)


def register(app: typer.Typer) -> None:
    app.command("infer", no_args_is_help=True)(infer)
