"""`tritonctl perf`: load sweeps against any Triton-compatible server, like perf_analyzer.

    tritonctl perf run MODEL [options]      measure (`tritonctl perf MODEL ...` is the same)
    tritonctl perf compare A.json B.json    differences between two saved runs

Exit codes: 0 measured, 1 the run failed (server unreachable, every request refused ...),
2 usage error (bad flag values). A model literally named `run` or `compare` needs `perf run NAME`.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from typer.core import TyperGroup

from tritonctl.cli.perf_output import LiveProgress, print_report, write_outputs

if TYPE_CHECKING:
    from typer._click.core import Context

    from tritonctl.perf.settings import LoadLevel, PerfSettings
    from tritonctl.perf.settings import Protocol as WireName


class WireProtocol(str, Enum):
    grpc = "grpc"
    http = "http"


class Distribution(str, Enum):
    constant = "constant"
    poisson = "poisson"


class HttpEncoding(str, Enum):
    binary = "binary"
    json = "json"


class GrpcClient(str, Enum):
    raw = "raw"
    grpcio = "grpcio"


class SharedMemory(str, Enum):
    none = "none"
    system = "system"


class _RunByDefault(TyperGroup):
    """`perf MODEL ...` means `perf run MODEL ...`: anything that is not a subcommand goes to `run`."""

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


perf_app = typer.Typer(
    cls=_RunByDefault,
    name="perf",
    no_args_is_help=True,
    help="Measure throughput and latency percentiles under load (perf_analyzer's method, any "
    "Triton-compatible server). `tritonctl perf MODEL` is short for `tritonctl perf run MODEL`.",
)

# Options shared with `tritonctl tune`.
ModelArgument = Annotated[str, typer.Argument(help="Model name.", show_default=False)]
UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        "-u",
        help="Server address host:port (default 127.0.0.1:8001 for grpc, 127.0.0.1:8000 for http).",
        envvar="TRITONCTL_URL",
        show_default=False,
    ),
]
ProtocolOption = Annotated[
    WireProtocol,
    typer.Option("--protocol", "-i", help="Protocol to load the server with.", case_sensitive=False),
]
VersionOption = Annotated[
    str, typer.Option("--model-version", "-x", help="Model version (default: the server's choice).")
]
ConcurrencyOption = Annotated[
    str | None,
    typer.Option(
        "--concurrency-range",
        help="Closed loop: START:END[:STEP] requests kept in flight (default 1).",
        show_default=False,
    ),
]
RateOption = Annotated[
    str | None,
    typer.Option(
        "--request-rate-range",
        help="Open loop: START:END[:STEP] requests per second; latency counts from the scheduled send time.",
        show_default=False,
    ),
]
DistributionOption = Annotated[
    Distribution,
    typer.Option("--request-distribution", help="Open-loop send times: evenly spaced or Poisson arrivals."),
]
BudgetOption = Annotated[
    float | None,
    typer.Option(
        "--latency-budget-ms",
        "-l",
        help="Stop the sweep at the first level whose p99 exceeds this.",
        min=0.001,
    ),
]
IntervalOption = Annotated[
    int, typer.Option("--measurement-interval", "-p", help="Measurement window length in ms.", min=10)
]
CountOption = Annotated[
    int | None,
    typer.Option(
        "--request-count",
        "--measurement-request-count",
        help="Count windows: a window ends after this many requests (instead of a fixed time).",
        min=1,
        show_default=False,
    ),
]
StabilityOption = Annotated[
    float,
    typer.Option(
        "--stability-percentage",
        "-s",
        help="Stable once the last 3 windows' throughput and latency are within this % of their mean.",
        min=0.0,
    ),
]
TrialsOption = Annotated[
    int,
    typer.Option("--max-trials", "-r", help="Most windows per level before reporting it unstable.", min=1),
]
WarmupOption = Annotated[
    int, typer.Option("--warmup-ms", help="Load held before the first window of each level (ignored).", min=0)
]
PercentileOption = Annotated[
    int | None,
    typer.Option(
        "--percentile",
        help="Judge stability on this latency percentile instead of the average.",
        min=1,
        max=99,
    ),
]
InputDataOption = Annotated[
    str,
    typer.Option(
        "--input-data",
        help="random (seeded), zero, a perf_analyzer JSON file, a .npy file, or a folder of NAME.npy files.",
    ),
]
ShapeOption = Annotated[
    list[str] | None,
    typer.Option(
        "--shape",
        help="NAME:DIMS for an input with variable dims (one sample, without the batch dim); repeatable.",
        show_default=False,
    ),
]
DtypeOption = Annotated[
    list[str] | None,
    typer.Option(
        "--dtype",
        help="NAME:DATATYPE for servers whose metadata lacks it (e.g. INPUT0:FP32); repeatable.",
        show_default=False,
    ),
]
BatchOption = Annotated[int, typer.Option("--batch-size", "-b", help="Batch size of each request.", min=1)]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of the random input data.")]
GrpcClientOption = Annotated[
    GrpcClient,
    typer.Option(
        "--grpc-client",
        help="gRPC load client: raw (lean HTTP/2, ~5x less CPU per request) or grpcio (the reference stack).",
    ),
]
WorkersOption = Annotated[
    int,
    typer.Option(
        "--workers",
        help="Load generator processes; 0 = auto (2 to 4 by CPU count, at most the concurrency).",
        min=0,
    ),
]


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg="red")
    return typer.Exit(code)


def parse_levels(concurrency_range: str | None, request_rate_range: str | None) -> tuple[LoadLevel, ...]:
    from tritonctl.perf.errors import PerfUsageError
    from tritonctl.perf.settings import parse_range

    if concurrency_range and request_rate_range:
        raise PerfUsageError("give either --concurrency-range or --request-rate-range, not both")
    if request_rate_range:
        return parse_range(request_rate_range, "request_rate")
    return parse_range(concurrency_range or "1", "concurrency")


def with_sequence_options(settings: PerfSettings, length: int, id_range: str) -> PerfSettings:
    """--sequence-length and --sequence-id-range (used when the model is stateful)."""
    import dataclasses

    from tritonctl.perf.errors import PerfUsageError
    from tritonctl.perf.sequences import parse_id_range

    try:
        ids = parse_id_range(id_range)
    except ValueError as exc:
        raise PerfUsageError(str(exc)) from None
    return dataclasses.replace(settings, sequence_length=length, sequence_id_range=ids)


def make_settings(
    model: str,
    *,
    url: str | None,
    protocol: WireProtocol,
    model_version: str,
    levels: tuple[LoadLevel, ...],
    distribution: Distribution = Distribution.constant,
    latency_budget_ms: float | None = None,
    measurement_interval: int = 5000,
    request_count: int | None = None,
    stability_percentage: float = 10.0,
    max_trials: int = 10,
    warmup_ms: int = 500,
    percentile: int | None = None,
    input_data: str = "random",
    shape: list[str] | None = None,
    dtype: list[str] | None = None,
    batch_size: int = 1,
    seed: int = 0,
    string_length: int = 16,
    http_encoding: HttpEncoding = HttpEncoding.binary,
    workers: int = 1,
    grpc_client: GrpcClient = GrpcClient.raw,
    shared_memory: SharedMemory = SharedMemory.none,
    output_shared_memory_size: int = 100 * 1024,
) -> PerfSettings:
    """Flags -> PerfSettings (raises PerfUsageError with a message naming the flag)."""
    from tritonctl.perf.settings import (
        InputSettings,
        MeasurementSettings,
        PerfSettings,
        auto_workers,
        check_input_source,
        normalize_url,
        parse_datatype,
        parse_shape,
    )

    wire: WireName = protocol.value
    return PerfSettings(
        model=model,
        url=normalize_url(url, wire),
        protocol=wire,
        model_version=model_version,
        levels=levels,
        distribution=distribution.value,
        latency_budget_ms=latency_budget_ms,
        measurement=MeasurementSettings(
            interval_ms=measurement_interval,
            request_count=request_count,
            stability_percentage=stability_percentage,
            max_trials=max_trials,
            warmup_ms=warmup_ms,
            percentile=percentile,
        ),
        inputs=InputSettings(
            source=check_input_source(input_data),
            shapes=dict(parse_shape(item) for item in shape or []),
            datatypes=dict(parse_datatype(item) for item in dtype or []),
            batch_size=batch_size,
            seed=seed,
            string_length=string_length,
            http_encoding=http_encoding.value,
        ),
        workers=workers or auto_workers(levels),
        grpc_client=grpc_client.value,
        shared_memory=shared_memory.value,
        output_shared_memory_size=output_shared_memory_size,
    )


@perf_app.command("run", no_args_is_help=True)
def run(
    model: ModelArgument,
    *,
    url: UrlOption = None,
    protocol: ProtocolOption = WireProtocol.grpc,
    model_version: VersionOption = "",
    concurrency_range: ConcurrencyOption = None,
    request_rate_range: RateOption = None,
    request_distribution: DistributionOption = Distribution.constant,
    latency_budget_ms: BudgetOption = None,
    measurement_interval: IntervalOption = 5000,
    request_count: CountOption = None,
    stability_percentage: StabilityOption = 10.0,
    max_trials: TrialsOption = 10,
    warmup_ms: WarmupOption = 500,
    percentile: PercentileOption = None,
    input_data: InputDataOption = "random",
    shape: ShapeOption = None,
    dtype: DtypeOption = None,
    batch_size: BatchOption = 1,
    seed: SeedOption = 0,
    string_length: Annotated[
        int, typer.Option("--string-length", help="Length of random BYTES.", min=1)
    ] = 16,
    http_encoding: Annotated[
        HttpEncoding,
        typer.Option(
            "--http-encoding", help="HTTP tensors: Triton's binary extension, or plain JSON (KServe v2)."
        ),
    ] = HttpEncoding.binary,
    workers: WorkersOption = 0,
    grpc_client: GrpcClientOption = GrpcClient.raw,
    shared_memory: Annotated[
        SharedMemory,
        typer.Option(
            "--shared-memory",
            help="system: send tensors through POSIX shared-memory regions (the server needs "
            "--allow-client-shm=true), like perf_analyzer.",
        ),
    ] = SharedMemory.none,
    output_shared_memory_size: Annotated[
        int,
        typer.Option("--output-shared-memory-size", help="Bytes of each output's region.", min=1),
    ] = 100 * 1024,
    sequence_length: Annotated[
        int,
        typer.Option(
            "--sequence-length",
            help="Stateful models: requests per sequence (each varies by up to 20%, like perf_analyzer).",
            min=1,
        ),
    ] = 20,
    sequence_id_range: Annotated[
        str,
        typer.Option(
            "--sequence-id-range", help="Stateful models: sequence ids START[:END] (wrapping at END)."
        ),
    ] = "1",
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write results as JSON.", dir_okay=False, show_default=False)
    ] = None,
    csv_path: Annotated[
        Path | None,
        typer.Option(
            "--csv", "-f", help="Write perf_analyzer-style CSV.", dir_okay=False, show_default=False
        ),
    ] = None,
    plot_path: Annotated[
        Path | None,
        typer.Option("--plot", help="Write latency percentiles vs throughput as PNG.", dir_okay=False),
    ] = None,
) -> None:
    """Sweep load levels and report throughput, latency percentiles and the server-side breakdown.

    Example: tritonctl perf densenet -u 127.0.0.1:8001 --concurrency-range 1:8:1 --json out.json
    """
    from rich.console import Console

    from tritonctl.perf.errors import PerfError, PerfUsageError
    from tritonctl.perf.runner import run_sweep

    try:
        settings = make_settings(
            model,
            url=url,
            protocol=protocol,
            model_version=model_version,
            levels=parse_levels(concurrency_range, request_rate_range),
            distribution=request_distribution,
            latency_budget_ms=latency_budget_ms,
            measurement_interval=measurement_interval,
            request_count=request_count,
            stability_percentage=stability_percentage,
            max_trials=max_trials,
            warmup_ms=warmup_ms,
            percentile=percentile,
            input_data=input_data,
            shape=shape,
            dtype=dtype,
            batch_size=batch_size,
            seed=seed,
            string_length=string_length,
            http_encoding=http_encoding,
            workers=workers,
            grpc_client=grpc_client,
            shared_memory=shared_memory,
            output_shared_memory_size=output_shared_memory_size,
        )
        settings = with_sequence_options(settings, sequence_length, sequence_id_range)
        console = Console()
        with LiveProgress(Console(stderr=True), len(settings.levels)) as progress:
            report = run_sweep(settings, progress)
        print_report(console, report)
        write_outputs(report.to_json(), json_path, csv_path, plot_path)
    except PerfUsageError as exc:
        raise fail(str(exc), 2) from None
    except PerfError as exc:
        raise fail(str(exc)) from None


@perf_app.command("compare", no_args_is_help=True)
def compare(
    first: Annotated[Path, typer.Argument(help="Baseline run (perf --json).", exists=True, dir_okay=False)],
    second: Annotated[Path, typer.Argument(help="Run to compare against it.", exists=True, dir_okay=False)],
    plot_path: Annotated[
        Path | None,
        typer.Option("--plot", help="Plot both runs' latency vs throughput as PNG.", dir_okay=False),
    ] = None,
) -> None:
    """Print the throughput and latency differences between two saved runs, level by level.

    Example: tritonctl perf compare before.json after.json --plot both.png
    """
    from rich.console import Console

    from tritonctl.perf.errors import PerfUsageError
    from tritonctl.perf.report import compare_table, read_json

    try:
        a, b = read_json(first), read_json(second)
        Console().print(compare_table(a, b, first.name, second.name))
        if plot_path:
            from tritonctl.perf.plot import plot_latency_vs_throughput

            plot_latency_vs_throughput([(first.stem, a), (second.stem, b)], plot_path)
    except PerfUsageError as exc:
        raise fail(str(exc), 2) from None


def register(app: typer.Typer) -> None:
    app.add_typer(perf_app, name="perf")
