"""`tritonctl models list|ready|config|stats|load|unload`: the model repository API of a running server.

Works against any Triton-compatible server over HTTP or gRPC. Exit codes: 0 done (for `ready`:
ready), 1 the server refused or failed (for `ready`: not ready), 2 usage error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tritonctl.cli.infer import FormatOption, OutputFormat, Protocol, ProtocolOption, UrlOption, fail

if TYPE_CHECKING:
    from tritonctl.client import TritonConnection

app = typer.Typer(help="List, inspect, load and unload the models of a running server.", no_args_is_help=True)

ModelArgument = Annotated[str, typer.Argument(help="Model name.", show_default=False)]
VersionOption = Annotated[str, typer.Option("--version", "-v", help="Model version (default: all / latest).")]


def _connect(url: str | None, protocol: Protocol) -> TritonConnection:
    from tritonctl.client import TritonConnection

    return TritonConnection(url, protocol.value)


def _run(url: str | None, protocol: Protocol, action: Any) -> Any:
    from server.errors import ServerError

    try:
        with _connect(url, protocol) as connection:
            return action(connection)
    except ServerError as exc:
        raise fail(str(exc)) from None


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2))


@app.command("list")
def list_models(
    url: UrlOption = None,
    protocol: ProtocolOption = Protocol.http,
    ready: Annotated[bool, typer.Option("--ready", help="Only models that are ready.")] = False,
    output_format: FormatOption = OutputFormat.table,
) -> None:
    """Every model of the repository with its version, state and reason."""
    entries: list[dict[str, Any]] = _run(url, protocol, lambda c: c.repository_index(ready))
    memory = _run(url, protocol, _memory_by_version)
    for entry in entries:
        by_device = memory.get((entry.get("name", ""), entry.get("version", "")))
        if by_device is not None:
            entry["memory_bytes"] = sum(by_device.values())
            entry["memory_by_device"] = by_device
    if output_format is OutputFormat.json:
        _print_json(entries)
        return
    from rich.table import Table

    from tritonctl.cli.tables import print_table

    table = Table()
    for column in ("model", "version", "state", "memory", "reason"):
        table.add_column(column, justify="right" if column == "memory" else "left")
    for entry in entries:
        state = entry.get("state", "")
        style = "green" if state == "READY" else "yellow" if state else "dim"
        table.add_row(
            entry.get("name", ""),
            entry.get("version", ""),
            f"[{style}]{state or '-'}[/{style}]",
            memory_cell(entry.get("memory_by_device")),
            entry.get("reason", ""),
        )
    print_table(table)


def memory_cell(by_device: dict[str, int] | None) -> str:
    """`12.0 MiB`, or with GPU memory `12.0 MiB + gpu0 300.0 MiB` (CPU first, then each GPU)."""
    if by_device is None:
        return "-"
    parts = [f"{by_device.get('cpu', 0) / (1 << 20):.1f} MiB"]
    parts += [
        f"{device} {size / (1 << 20):.1f} MiB"
        for device, size in sorted(by_device.items())
        if device != "cpu"
    ]
    return " + ".join(parts)


def _memory_by_version(connection: Any) -> dict[tuple[str, str], dict[str, int]]:
    """(model, version) -> {"cpu": bytes, "gpuN": bytes}, from the statistics' memory_usage
    (Triton's field, type CPU|GPU and id; tritonctl's server fills it). Empty when it reports none."""
    from server.errors import ServerError

    try:
        models: list[dict[str, Any]] = connection.model_statistics("", "")
    except ServerError:
        return {}
    found: dict[tuple[str, str], dict[str, int]] = {}
    for model in models:
        usage = model.get("memory_usage") or []
        if usage:
            by_device: dict[str, int] = {}
            for item in usage:
                kind = str(item.get("type", "CPU")).upper()
                device = "cpu" if kind != "GPU" else f"gpu{int(item.get('id', 0) or 0)}"
                by_device[device] = by_device.get(device, 0) + int(item.get("byte_size", 0) or 0)
            found[(str(model.get("name", "")), str(model.get("version", "")))] = by_device
    return found


@app.command()
def ready(
    model: ModelArgument,
    version: VersionOption = "",
    url: UrlOption = None,
    protocol: ProtocolOption = Protocol.http,
) -> None:
    """Say whether MODEL (or one version) is ready; exit 0 when it is, 1 when not."""
    is_ready: bool = _run(url, protocol, lambda c: c.model_ready(model, version))
    typer.echo(f"{model}: {'ready' if is_ready else 'not ready'}")
    if not is_ready:
        raise typer.Exit(1)


@app.command()
def config(
    model: ModelArgument,
    version: VersionOption = "",
    url: UrlOption = None,
    protocol: ProtocolOption = Protocol.http,
) -> None:
    """The model's configuration as the server completed it (JSON)."""
    _print_json(_run(url, protocol, lambda c: c.model_config(model, version)))


def _average_us(stat: dict[str, Any]) -> str:
    count = int(stat.get("count", 0) or 0)
    return f"{int(stat.get('ns', 0) or 0) / count / 1000:.1f}" if count else "-"


@app.command()
def stats(
    model: Annotated[str, typer.Argument(help="Model name (default: every model).", show_default=False)] = "",
    version: VersionOption = "",
    url: UrlOption = None,
    protocol: ProtocolOption = Protocol.http,
    output_format: FormatOption = OutputFormat.table,
) -> None:
    """Inference statistics: counts and average times per model version."""
    models: list[dict[str, Any]] = _run(url, protocol, lambda c: c.model_statistics(model, version))
    if output_format is OutputFormat.json:
        _print_json(models)
        return
    from rich.table import Table

    from tritonctl.cli.tables import print_table

    table = Table()
    table.add_column("model")
    for column in ("version", "inferences", "executions", "ok", "failed", "queue µs", "compute µs"):
        table.add_column(column, justify="left" if column == "version" else "right")
    for entry in models:
        inference = entry.get("inference_stats", {})
        compute = {
            "count": inference.get("compute_infer", {}).get("count", 0),
            "ns": sum(
                int(inference.get(part, {}).get("ns", 0) or 0)
                for part in ("compute_input", "compute_infer", "compute_output")
            ),
        }
        table.add_row(
            entry.get("name", ""),
            str(entry.get("version", "")),
            str(entry.get("inference_count", 0)),
            str(entry.get("execution_count", 0)),
            str(inference.get("success", {}).get("count", 0)),
            str(inference.get("fail", {}).get("count", 0)),
            _average_us(inference.get("queue", {})),
            _average_us(compute),
        )
    print_table(table)


def read_config_override(value: str) -> str:
    """`--config`: a JSON file, a config.pbtxt file or a JSON literal -> the JSON text to send."""
    from server.errors import InvalidInput
    from tritonctl.client.inputs import is_file

    path = Path(value)
    if is_file(value):
        text = path.read_text()
        if path.suffix == ".pbtxt" or not text.lstrip().startswith("{"):
            from server.repository import config_to_json, parse_model_config

            return json.dumps(config_to_json(parse_model_config(text, str(path))))
    else:
        text = value
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"--config is neither a file nor valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise InvalidInput("--config must be a JSON object (a model configuration)")
    return json.dumps(parsed)


@app.command()
def load(
    model: ModelArgument,
    config_override: Annotated[
        str | None,
        typer.Option(
            "--config",
            "-c",
            help="Config override: a JSON file, a config.pbtxt file or a JSON literal.",
            show_default=False,
        ),
    ] = None,
    url: UrlOption = None,
    protocol: ProtocolOption = Protocol.http,
) -> None:
    """Load (or reload) MODEL; the server must run with --model-control-mode=explicit."""
    from server.errors import ServerError

    try:
        override = read_config_override(config_override) if config_override else None
    except ServerError as exc:
        raise fail(str(exc)) from None
    _run(url, protocol, lambda c: c.load_model(model, override))
    typer.echo(f"{model}: loaded")


@app.command()
def unload(model: ModelArgument, url: UrlOption = None, protocol: ProtocolOption = Protocol.http) -> None:
    """Unload MODEL; the server must run with --model-control-mode=explicit."""
    _run(url, protocol, lambda c: c.unload_model(model))
    typer.echo(f"{model}: unloaded")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="models")
