"""`tritonctl init REPO --template T --model NAME`: scaffold a model from a template.

Exit codes: 0 written, 1 refused (folder not empty without --force, bad --from file),
2 usage error.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer


class TemplateName(str, Enum):
    onnx = "onnx"
    pytorch = "pytorch"
    tensorrt = "tensorrt"
    python = "python"
    ensemble = "ensemble"


class InstanceKind(str, Enum):
    auto = "auto"
    cpu = "cpu"
    gpu = "gpu"
    model = "model"


def init(
    repository: Annotated[
        Path, typer.Argument(help="Model repository folder (created if missing).", file_okay=False)
    ],
    *,
    template: Annotated[
        TemplateName, typer.Option("--template", "-t", help="What kind of model to scaffold.")
    ],
    model: Annotated[str, typer.Option("--model", "-m", help="Model name (the folder under REPO).")],
    max_batch_size: Annotated[
        int | None,
        typer.Option(
            "--max-batch-size",
            min=0,
            help="Largest batch; 0 turns batching off. Default: 8, or from the model file with --from.",
            show_default=False,
        ),
    ] = None,
    instance_count: Annotated[
        int, typer.Option("--instance-count", min=1, help="Model instances (worker processes) per group.")
    ] = 1,
    instance_kind: Annotated[
        InstanceKind,
        typer.Option("--instance-kind", help="Where instances run (auto: GPU if any, else CPU)."),
    ] = InstanceKind.auto,
    gpus: Annotated[
        str | None,
        typer.Option(
            "--gpus", help="Comma-separated GPU ids for --instance-kind gpu, e.g. 0,1.", show_default=False
        ),
    ] = None,
    dynamic_batching: Annotated[
        bool,
        typer.Option(
            "--dynamic-batching/--no-dynamic-batching", help="Enable the dynamic batcher (needs batching)."
        ),
    ] = True,
    max_queue_delay_us: Annotated[
        int,
        typer.Option(
            "--max-queue-delay-us", min=0, help="Dynamic batcher: longest wait to fill a batch (µs)."
        ),
    ] = 0,
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="Your model file: copied into version 1; the config is generated from it.",
            exists=True,
            show_default=False,
        ),
    ] = None,
    inputs: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            help="With --from: an input as NAME:DTYPE:DIMS (TorchScript, python).",
            show_default=False,
        ),
    ] = None,
    outputs: Annotated[
        list[str] | None,
        typer.Option("--output", help="With --from: an output as NAME:DTYPE:DIMS.", show_default=False),
    ] = None,
    allow_python: Annotated[
        bool,
        typer.Option(
            "--allow-python", help="With --from model.py: run its auto_complete_config (executes it)."
        ),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing model folder.")] = False,
) -> None:
    """Scaffold REPO/MODEL/config.pbtxt and REPO/MODEL/1/ from a template.

    Without --from, the onnx, pytorch and python templates write a tiny add/sub model that runs.
    """
    from server.errors import ConfigError
    from tritonctl.repository.generate import parse_tensor_spec
    from tritonctl.repository.scaffold import InitOptions, init_model

    try:
        options = InitOptions(
            max_batch_size=max_batch_size,
            instance_count=instance_count,
            instance_kind=f"KIND_{instance_kind.value.upper()}",
            gpus=tuple(int(g) for g in gpus.split(",")) if gpus else (),
            dynamic_batching=dynamic_batching,
            max_queue_delay_us=max_queue_delay_us,
            from_file=from_file,
            inputs=tuple(parse_tensor_spec(s) for s in inputs or ()),
            outputs=tuple(parse_tensor_spec(s) for s in outputs or ()),
            force=force,
            allow_python=allow_python,
        )
        written = init_model(repository, template.value, model, options)
    except ValueError:
        typer.echo(f"error: --gpus must be comma-separated integers, got {gpus!r}", err=True)
        raise typer.Exit(2) from None
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    for path in written:
        typer.echo(f"wrote {path}")
    typer.echo(f"next: tritonctl validate {repository}")


def register(app: typer.Typer) -> None:
    app.command("init")(init)
