"""`tritonctl tune MODEL`: search instance count, max_batch_size and batching delay for the best config.

Each candidate is loaded over the repository API with a config override (the server must run in
explicit model-control mode), swept like `tritonctl perf`, and ranked; the original config is
reloaded at the end, also after an error, Ctrl-C or SIGTERM.
Exit codes: 0 done, 1 the run failed (or the server refused the load API), 2 usage error,
130 interrupted (original config restored).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tritonctl.cli.perf import (
    BatchOption,
    ConcurrencyOption,
    CountOption,
    Distribution,
    DistributionOption,
    DtypeOption,
    InputDataOption,
    ModelArgument,
    ProtocolOption,
    RateOption,
    SeedOption,
    ShapeOption,
    StabilityOption,
    TrialsOption,
    UrlOption,
    VersionOption,
    WarmupOption,
    WireProtocol,
    WorkersOption,
    fail,
    make_settings,
    parse_levels,
)

if TYPE_CHECKING:
    from rich.console import Console

    from tritonctl.perf.measure import LevelResult, Window
    from tritonctl.perf.runner import SweepObserver
    from tritonctl.perf.settings import LoadLevel
    from tritonctl.perf.tune import Candidate, CandidateResult

DEFAULT_TUNE_CONCURRENCY = "4:16:4"


class Objective(str, Enum):
    throughput = "throughput"
    latency = "latency"


class Search(str, Enum):
    brute = "brute"
    quick = "quick"


def parse_int_list(text: str | None, flag: str, *, minimum: int, allow_off: bool = False) -> tuple[int, ...]:
    """`1,2,4` -> (1, 2, 4); `off` (batching delay only) -> DYNAMIC_BATCHING_OFF."""
    from tritonctl.perf.errors import PerfUsageError
    from tritonctl.perf.tune import DYNAMIC_BATCHING_OFF

    if not text:
        return ()
    values: list[int] = []
    for raw in text.split(","):
        item = raw.strip()
        if allow_off and item.lower() == "off":
            values.append(DYNAMIC_BATCHING_OFF)
            continue
        try:
            value = int(item)
        except ValueError:
            hint = " or off" if allow_off else ""
            raise PerfUsageError(f"{flag} {text!r}: {item!r} is not a whole number{hint}") from None
        if value < minimum:
            raise PerfUsageError(f"{flag} {text!r}: values must be at least {minimum}")
        values.append(value)
    if len(set(values)) != len(values):
        raise PerfUsageError(f"{flag} {text!r}: a value is repeated")
    return tuple(values)


class _TuneProgress:
    """One line per finished candidate, and the current window of the running sweep."""

    def __init__(self, console: Console) -> None:
        from rich.live import Live

        self._lines: list[str] = []
        self._current = ""
        self._live = Live(console=console, transient=True, refresh_per_second=8)

    def __enter__(self) -> _TuneProgress:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(None, None, None)

    def _render(self) -> None:
        from rich.text import Text

        self._live.update(Text("\n".join([*self._lines[-15:], self._current])))

    def candidate_started(self, candidate: Candidate, index: int) -> SweepObserver:
        self._candidate = candidate.label if index else "original (as loaded)"
        self._current = f"{self._candidate}: loading"
        self._render()
        return self

    def candidate_finished(self, result: CandidateResult) -> None:
        if result.error:
            outcome = f"failed: {result.error}"
        elif result.best is not None:
            outcome = (
                f"{result.best.throughput:.1f} infer/s, p99 {result.best.latency_us['p99'] / 1000:.2f} ms"
            )
        else:
            outcome = "no result"
        self._lines.append(f"{self._candidate}: {outcome}")
        self._current = ""
        self._render()

    # SweepObserver
    def level_started(self, level: LoadLevel, index: int, total: int) -> None:
        self._current = f"{self._candidate}: {level.label} ({index + 1}/{total}) warming up"
        self._render()

    def window_measured(self, level: LoadLevel, trial: int, window: Window, batch_size: int) -> None:
        self._current = (
            f"{self._candidate}: {level.label} window {trial}: {window.throughput(batch_size):.1f} infer/s"
        )
        self._render()

    def level_finished(self, result: LevelResult) -> None:
        pass


def tune(
    model: ModelArgument,
    *,
    url: UrlOption = None,
    protocol: ProtocolOption = WireProtocol.grpc,
    model_version: VersionOption = "",
    instances: Annotated[
        str | None,
        typer.Option("--instances", help="Instance counts to try, e.g. 1,2,4.", show_default=False),
    ] = None,
    max_batch_size: Annotated[
        str | None,
        typer.Option(
            "--max-batch-size", help="max_batch_size values to try, e.g. 8,16,32.", show_default=False
        ),
    ] = None,
    max_queue_delay_us: Annotated[
        str | None,
        typer.Option(
            "--max-queue-delay-us",
            help="Dynamic batching max_queue_delay_microseconds to try, e.g. 0,100,500; `off` disables it.",
            show_default=False,
        ),
    ] = None,
    objective: Annotated[
        Objective, typer.Option("--objective", help="Maximize throughput, or minimize p99 latency.")
    ] = Objective.throughput,
    latency_budget_ms: Annotated[
        float | None,
        typer.Option("--latency-budget-ms", help="Only count load levels with p99 below this.", min=0.001),
    ] = None,
    min_throughput: Annotated[
        float | None,
        typer.Option("--min-throughput", help="Only count load levels at least this fast (infer/s).", min=0),
    ] = None,
    search: Annotated[
        Search,
        typer.Option("--search", help="brute: every combination; quick: hill-climb from the current config."),
    ] = Search.brute,
    concurrency_range: ConcurrencyOption = None,
    request_rate_range: RateOption = None,
    request_distribution: DistributionOption = Distribution.constant,
    measurement_interval: Annotated[
        int, typer.Option("--measurement-interval", "-p", help="Measurement window length in ms.", min=10)
    ] = 2000,
    request_count: CountOption = None,
    stability_percentage: StabilityOption = 10.0,
    max_trials: TrialsOption = 5,
    warmup_ms: WarmupOption = 500,
    input_data: InputDataOption = "random",
    shape: ShapeOption = None,
    dtype: DtypeOption = None,
    batch_size: BatchOption = 1,
    seed: SeedOption = 0,
    workers: WorkersOption = 0,
    write_config: Annotated[
        Path | None,
        typer.Option(
            "--write-config", help="Write the winning config.pbtxt here.", dir_okay=False, show_default=False
        ),
    ] = None,
    report_dir: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Folder for tune.md, tune.json and PNG plots.",
            file_okay=False,
            show_default=False,
        ),
    ] = None,
) -> None:
    """Find the config with the best throughput (or latency) by reloading and measuring candidates.

    Example: tritonctl tune mlp --instances 1,2 --max-batch-size 8,16 --max-queue-delay-us 0,500
    --write-config best.pbtxt --report tune-out
    """
    from rich.console import Console

    from tritonctl.perf.errors import PerfError, PerfUsageError
    from tritonctl.perf.tune import Constraints, SearchSpace, TuneSettings, run_tune
    from tritonctl.perf.tune_report import ranked_table, write_report
    from tritonctl.perf.tune_report import write_config as write_config_file

    console = Console()
    try:
        space = SearchSpace(
            parse_int_list(instances, "--instances", minimum=1),
            parse_int_list(max_batch_size, "--max-batch-size", minimum=0),
            parse_int_list(max_queue_delay_us, "--max-queue-delay-us", minimum=0, allow_off=True),
        )
        if space.is_empty:
            raise PerfUsageError(
                "nothing to tune: give --instances, --max-batch-size and/or --max-queue-delay-us"
            )
        perf = make_settings(
            model,
            url=url,
            protocol=protocol,
            model_version=model_version,
            levels=parse_levels(
                concurrency_range or (None if request_rate_range else DEFAULT_TUNE_CONCURRENCY),
                request_rate_range,
            ),
            distribution=request_distribution,
            measurement_interval=measurement_interval,
            request_count=request_count,
            stability_percentage=stability_percentage,
            max_trials=max_trials,
            warmup_ms=warmup_ms,
            input_data=input_data,
            shape=shape,
            dtype=dtype,
            batch_size=batch_size,
            seed=seed,
            workers=workers,
        )
        settings = TuneSettings(
            perf,
            space,
            Constraints(objective.value, latency_budget_ms, min_throughput),
            search.value,
        )
        with _TuneProgress(Console(stderr=True)) as progress:
            report = run_tune(settings, progress)
    except PerfUsageError as exc:
        raise fail(str(exc), 2) from None
    except PerfError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        typer.secho("interrupted: the original config was reloaded", err=True, fg="yellow")
        raise typer.Exit(130) from None
    console.print(ranked_table(report))
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    winner = report.winner
    if winner is None:
        raise fail("no candidate produced a result")
    if report.original_wins:
        console.print("the original config ranks above every candidate; keeping it")
        best_config = report.original
    else:
        note = "" if winner.feasible else " (misses the constraints)"
        console.print(f"winner: [bold]{winner.candidate.label}[/bold]{note}")
        best_config = winner.config or report.original
    if write_config:
        write_config_file(best_config, write_config)
        console.print(f"wrote {write_config}")
    if report_dir:
        for path in write_report(report, report_dir):
            console.print(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.command("tune", no_args_is_help=True)(tune)
