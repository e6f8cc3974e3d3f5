"""`tritonctl rollout start|status|rollback`: safe version rollouts on a running server (gRPC by default).

The logic lives in tritonctl/rollout (a state machine); this module parses flags and prints.
Exit codes of `start`: 0 promoted (or --dry-run planned), 1 rolled back (a gate failed or the
server failed) or could not start, 2 usage error, 3 the rollback failed too (the server needs a
look), 130 interrupted by Ctrl-C and rolled back. `status` and `rollback`: 0 done, 1 failed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tritonctl.cli.infer import FormatOption, OutputFormat, Protocol, ProtocolOption, UrlOption

if TYPE_CHECKING:
    from rich.console import Console

    from tritonctl.client import TritonConnection
    from tritonctl.rollout.gates import CanaryVerdict, VersionCounters
    from tritonctl.rollout.machine import Observer, RolloutOutcome
    from tritonctl.rollout.plan import RolloutPlan
    from tritonctl.rollout.shadow import ShadowReport
    from tritonctl.rollout.state import Phase, RolloutRecord, StateStore

app = typer.Typer(
    help="Roll a model out to a new version: shadow check, weighted canary steps, automatic rollback.",
    no_args_is_help=True,
)

ModelArgument = Annotated[str, typer.Argument(help="Model name.", show_default=False)]
StateFileOption = Annotated[
    Path | None,
    typer.Option(
        "--state-file",
        help="Rollout state file (default $XDG_STATE_HOME/tritonctl/rollouts.json or "
        "~/.local/state/tritonctl/rollouts.json).",
        envvar="TRITONCTL_ROLLOUT_STATE",
        show_default=False,
    ),
]
EXIT_ROLLED_BACK, EXIT_USAGE, EXIT_ROLLBACK_FAILED, EXIT_INTERRUPTED = 1, 2, 3, 130


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _store(path: Path | None) -> StateStore:
    from tritonctl.rollout.state import StateStore

    return StateStore(path)


def _connect(url: str | None, protocol: str) -> TritonConnection:
    from tritonctl.client import TritonConnection

    return TritonConnection(url, protocol)


def _console() -> Console:
    from rich.console import Console

    return Console(highlight=False)


@app.command("start", no_args_is_help=True)
def start(
    model: ModelArgument,
    *,
    to_version: Annotated[
        int, typer.Option("--to-version", help="The version to roll out.", show_default=False)
    ],
    url: UrlOption = None,
    protocol: ProtocolOption = Protocol.grpc,
    steps: Annotated[str, typer.Option("--steps", help="Rising traffic percentages for the new version.")] = (
        "10,50,100"
    ),
    inputs: Annotated[
        Path | None,
        typer.Option(
            "--inputs",
            help="Shadow inputs in perf_analyzer's --input-data JSON format (default: "
            "seeded random data from the model's metadata).",
            show_default=False,
        ),
    ] = None,
    atol: Annotated[
        float, typer.Option("--atol", help="Absolute tolerance of the output comparison.")
    ] = 1e-5,
    rtol: Annotated[
        float, typer.Option("--rtol", help="Relative tolerance of the output comparison.")
    ] = 1e-4,
    max_p99_ratio: Annotated[
        float,
        typer.Option("--max-p99-ratio", help="Highest new/current latency ratio (shadow p99, canary mean)."),
    ] = 2.0,
    max_error_rate: Annotated[
        float, typer.Option("--max-error-rate", help="Highest share of failed requests to the new version.")
    ] = 0.01,
    hold_secs: Annotated[float, typer.Option("--hold-secs", help="Seconds to hold each canary step.")] = 30.0,
    shadow_requests: Annotated[
        int, typer.Option("--shadow-requests", help="Requests sent to both versions in the shadow check.")
    ] = 50,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random shadow inputs.")] = 0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check and print the plan; change nothing.")
    ] = False,
    state_file: StateFileOption = None,
) -> None:
    """Roll MODEL out to --to-version: load beside, shadow, canary steps, promote; roll back on failure."""
    from server.errors import ServerError
    from tritonctl.rollout.errors import RolloutUsageError
    from tritonctl.rollout.interrupts import Interrupts
    from tritonctl.rollout.machine import RolloutMachine
    from tritonctl.rollout.plan import Gates, RolloutSettings, parse_steps

    try:
        if inputs is not None and not inputs.is_file():
            raise RolloutUsageError(f"--inputs {inputs}: no such file")
        if hold_secs < 0 or shadow_requests < 1:
            raise RolloutUsageError("--hold-secs must be >= 0 and --shadow-requests >= 1")
        settings = RolloutSettings(
            to_version=to_version,
            steps=parse_steps(steps),
            hold_secs=hold_secs,
            gates=Gates(atol=atol, rtol=rtol, max_p99_ratio=max_p99_ratio, max_error_rate=max_error_rate),
            shadow_requests=shadow_requests,
            inputs_file=inputs,
            seed=seed,
            poll_secs=min(1.0, max(hold_secs / 4, 0.05)),
        )
    except RolloutUsageError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    console = _console()
    store = _store(state_file)
    try:
        with _connect(url, protocol.value) as connection, Interrupts() as interrupts:
            machine = RolloutMachine(
                connection,
                model,
                settings,
                store,
                server_url=connection.url,
                protocol=protocol.value,
                observer=_printer(console),
                sleep=interrupts.sleep,  # a hold wakes on Ctrl-C/SIGTERM, whichever thread gets it
            )
            plan = machine.plan()
            _print_plan(console, plan, store)
            if dry_run:
                console.print("[bold]--dry-run[/]: nothing was changed.")
                return
            with interrupts.installed():  # SIGTERM too (a cancelled CI job) rolls back
                outcome = machine.run(plan)
    except RolloutUsageError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    except ServerError as exc:
        raise fail(str(exc)) from None
    raise typer.Exit(_report_outcome(console, outcome))


def _print_plan(console: Console, plan: RolloutPlan, store: StateStore) -> None:
    console.print(
        f"[bold]Rollout of {plan.model}[/]: version {plan.from_version} -> {plan.to_version} "
        f"(policy now {plan.original_policy}; state file {store.path})"
    )
    for number, line in enumerate(plan.describe(), start=1):
        console.print(f"  {number}. {line}")


def _report_outcome(console: Console, outcome: RolloutOutcome) -> int:
    from tritonctl.rollout.state import Phase

    record = outcome.record
    if outcome.promoted:
        console.print(
            f"[green bold]promoted[/]: version {record.to_version} of {record.model} serves all traffic"
        )
        return 0
    if not outcome.changed:
        console.print(f"[red bold]not started[/]: {record.reason}")
        return EXIT_ROLLED_BACK
    if record.phase is Phase.ROLLBACK_FAILED:
        console.print(f"[red bold]rollback failed[/]: {record.reason}")
        console.print(
            f"retry with: tritonctl rollout rollback {record.model} -u {record.server} -i {record.protocol}"
        )
        return EXIT_ROLLBACK_FAILED
    console.print(f"[yellow bold]rolled back[/] to version {record.from_version}: {record.reason}")
    return EXIT_INTERRUPTED if outcome.interrupted else EXIT_ROLLED_BACK


def _printer(console: Console) -> Observer:
    from tritonctl.rollout.machine import Observer

    class Printer(Observer):
        def phase(self, phase: Phase, message: str) -> None:
            console.print(f"[cyan]{phase.value:>13}[/] {message}")

        def shadow(self, report: ShadowReport) -> None:
            _print_shadow(console, report)

        def holding(self, percent: int, seconds: float) -> None:
            console.print(f"{'':>13} holding {percent}% for {seconds:g}s (Ctrl-C rolls back)")

        def canary_step(self, percent: int, verdict: CanaryVerdict, baseline: VersionCounters) -> None:
            new = verdict.candidate
            ratio = f", mean latency ratio {verdict.latency_ratio:.2f}" if verdict.latency_ratio else ""
            if not new.requests:
                ratio += " [yellow](no unversioned traffic reached it: nothing for the gates to judge)[/]"
            console.print(
                f"{'':>13} {percent}% held: {new.requests} requests to the new version, {new.fail} failed"
                f"{ratio} (current version: {baseline.requests} since the canary began)"
            )

    return Printer()


def _print_shadow(console: Console, report: ShadowReport) -> None:
    from rich.table import Table

    from tritonctl.rollout.gates import percentile_ms

    table = Table(
        title=f"shadow check: {report.requests} requests, version {report.current} vs {report.candidate}"
    )
    for column in ("output", "compared", "mismatched", "max |diff|"):
        table.add_column(column)
    for comparison in report.outputs.values():
        diff = "-" if comparison.max_abs_diff is None else f"{comparison.max_abs_diff:.3g}"
        style = "red" if comparison.mismatched else ""
        table.add_row(
            comparison.name, str(comparison.compared), str(comparison.mismatched), diff, style=style
        )
    console.print(table)
    latency = Table(title="latency (client side, ms)")
    for column in ("version", "p50", "p99"):
        latency.add_column(column)
    for version, samples in (
        (report.current, report.current_latency_s),
        (report.candidate, report.candidate_latency_s),
    ):
        p50, p99 = percentile_ms(samples, 50), percentile_ms(samples, 99)
        latency.add_row(
            str(version), "-" if p50 is None else f"{p50:.2f}", "-" if p99 is None else f"{p99:.2f}"
        )
    console.print(latency)
    verdict = "[green]passed[/]" if report.passed else "[red]failed[/]: " + "; ".join(report.problems)
    console.print(f"shadow check {verdict}")


@app.command("status", no_args_is_help=True)
def status(
    model: ModelArgument,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            "-u",
            help="Server address (default: the one of the last rollout, else 127.0.0.1:8001).",
            envvar="TRITONCTL_URL",
            show_default=False,
        ),
    ] = None,
    protocol: Annotated[
        Protocol | None,
        typer.Option(
            "--protocol",
            "-i",
            help="Protocol (default: the last rollout's, else grpc).",
            case_sensitive=False,
            show_default=False,
        ),
    ] = None,
    state_file: StateFileOption = None,
    output_format: FormatOption = OutputFormat.table,
) -> None:
    """Versions, weights and readiness of MODEL on the server, and its last rollout."""
    from server.errors import ServerError

    store = _store(state_file)
    try:
        record = store.latest(model)
        chosen_url, chosen_protocol = _where(url, protocol, record)
        with _connect(chosen_url, chosen_protocol) as connection:
            view = _server_view(connection, model)
    except ServerError as exc:
        raise fail(str(exc)) from None
    if output_format is OutputFormat.json:
        typer.echo(
            json.dumps(
                {**view, "state_file": str(store.path), "last_rollout": record.to_json() if record else None},
                indent=2,
            )
        )
        return
    _print_status(_console(), model, view, record, store)


def _where(
    url: str | None, protocol: Protocol | None, record: RolloutRecord | None
) -> tuple[str | None, str]:
    """-u/-i when given, else where the last rollout ran, else gRPC on the default port."""
    chosen_protocol = protocol.value if protocol else (record.protocol if record else "grpc")
    if url is None and record is not None and (protocol is None or protocol.value == record.protocol):
        url = record.server
    return url, chosen_protocol


def _server_view(connection: TritonConnection, model: str) -> dict[str, Any]:
    from tritonctl.rollout.gates import counters_by_version
    from tritonctl.rollout.plan import config_weights, describe_policy

    entries = [e for e in connection.repository_index() if e.get("name") == model]
    config: dict[str, Any] = {}
    counters = {}
    if any(entry.get("state") == "READY" for entry in entries):
        config = connection.model_config(model)
        counters = counters_by_version(connection.model_statistics(model))
    weights = config_weights(config) or {}
    versions = []
    for entry in entries:
        version = str(entry.get("version", ""))
        number = int(version) if version.isdigit() else None
        stats = counters.get(number) if number is not None else None
        versions.append(
            {
                "version": version,
                "state": entry.get("state", ""),
                "reason": entry.get("reason", ""),
                "weight": weights.get(number) if number is not None and weights else None,
                "success": stats.success if stats else None,
                "fail": stats.fail if stats else None,
            }
        )
    return {
        "model": model,
        "server": connection.url,
        "policy": describe_policy(config) if config else "",
        "versions": versions,
    }


def _print_status(
    console: Console, model: str, view: dict[str, Any], record: RolloutRecord | None, store: StateStore
) -> None:
    from rich.table import Table

    table = Table(
        title=f"{model} on {view['server']}" + (f" (policy {view['policy']})" if view["policy"] else "")
    )
    for column in ("version", "state", "weight", "success", "fail", "reason"):
        table.add_column(column)
    for item in view["versions"]:
        table.add_row(
            *(
                ("-" if item[key] is None else str(item[key]))
                for key in ("version", "state", "weight", "success", "fail", "reason")
            )
        )
    console.print(table)
    if record is None:
        console.print(f"no rollout of {model} recorded in {store.path}")
        return
    running = f" (running, pid {record.pid})" if record.owner_alive() else ""
    console.print(
        f"last rollout: {record.from_version} -> {record.to_version}, {record.phase.value}{running}, "
        f"started {record.started_at}, updated {record.updated_at}"
    )
    if record.reason:
        console.print(f"reason: {record.reason}")
    console.print(f"state file: {store.path}")


@app.command("rollback", no_args_is_help=True)
def rollback(
    model: ModelArgument,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            "-u",
            help="Server address (default: the one of the last rollout).",
            envvar="TRITONCTL_URL",
            show_default=False,
        ),
    ] = None,
    protocol: Annotated[
        Protocol | None,
        typer.Option(
            "--protocol",
            "-i",
            help="Protocol (default: the last rollout's).",
            case_sensitive=False,
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Roll back even while the rollout still runs.")
    ] = False,
    state_file: StateFileOption = None,
) -> None:
    """Put MODEL back as it was before its last rollout (its original version policy and weights)."""
    from server.errors import ServerError
    from tritonctl.rollout import machine

    store = _store(state_file)
    try:
        chosen_url, chosen_protocol = _where(url, protocol, store.latest(model))
        with _connect(chosen_url, chosen_protocol) as connection:
            record = machine.rollback(connection, store, model, force=force)
    except ServerError as exc:
        raise fail(str(exc)) from None
    _console().print(
        f"rolled back: {model} serves version {record.from_version} again (policy "
        f"{_policy_text(record.original_config)}); state file {store.path}"
    )


def _policy_text(config: dict[str, Any]) -> str:
    from tritonctl.rollout.plan import describe_policy

    return describe_policy(config)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="rollout")
