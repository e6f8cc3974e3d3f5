"""`tritonctl`: one Typer sub-app or command per noun, registered from its own module.

Each module in `_COMMAND_MODULES` exposes `register(app)`. Modules import only typer/rich at the
top; heavy libraries (torch, onnxruntime, tensorrt, matplotlib, grpc) load inside the commands so
`tritonctl --help` stays fast.
"""

from __future__ import annotations

import importlib

import typer

from tritonctl import __version__
from tritonctl.cli import help_format

help_format.install()

_COMMAND_MODULES = (
    "init",
    "validate",
    "config",
    "serve",
    "infer",
    "models",
    "perf",
    "tune",
    "rollout",
    "deploy",
)

app = typer.Typer(
    name="tritonctl",
    help="The Triton Inference Server experience without the C++ build: scaffold, validate, serve, "
    "benchmark, tune, roll out and deploy model repositories.",
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"tritonctl {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """tritonctl: Triton-compatible model repository toolkit and server."""


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"tritonctl.cli.{name}")
        except ModuleNotFoundError as exc:
            # Only a missing command module itself is tolerated (work in progress); a missing
            # dependency inside one is a real error and must surface.
            if exc.name == f"tritonctl.cli.{name}":
                continue
            raise
        module.register(app)


_register_all()


def main() -> None:
    app()
