"""`tritonctl serve`: run the bundled Triton-compatible server on one or more model repositories.

A thin layer: the options build the same `ServerOptions` that `python -m server` builds from
Triton's flags, then `server.app.serve` runs. Triton's `--flag=value` spellings work as they are
(`--model-repository=/models --log-verbose=1 --backend-config=python,shm-default-size=2147483648`);
Triton's boolean flags take a value (`--strict-readiness=false`).

Exit codes: 0 stopped by a signal, 1 start-up failed (a model failed with --exit-on-error=true,
a port in use), 2 usage error.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer


class ControlMode(str, Enum):
    none = "none"
    poll = "poll"
    explicit = "explicit"


def _flag(value: str, name: str) -> bool:
    from server.errors import ConfigError
    from server.options import parse_bool

    try:
        return parse_bool(value, name)
    except ConfigError as exc:
        raise typer.BadParameter(exc.message, param_hint=name) from None


def serve(  # noqa: PLR0917 - typer maps each parameter to one command-line option
    model_repository: Annotated[
        list[Path],
        typer.Option(
            "--model-repository",
            "--model-store",
            help="Model repository folder (repeatable).",
            file_okay=False,
            show_default=False,
        ),
    ],
    host: Annotated[
        str, typer.Option(help="Address for all three ports; 0.0.0.0 accepts remote clients.")
    ] = "127.0.0.1",
    http_port: Annotated[int, typer.Option(help="HTTP (KServe v2 REST) port; 0 picks a free one.")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="gRPC port; 0 picks a free one.")] = 8001,
    metrics_port: Annotated[int, typer.Option(help="Prometheus metrics port; 0 picks a free one.")] = 8002,
    gpus: Annotated[
        str, typer.Option(help="GPUs the instances may use: all, none, or ids like 0,1.")
    ] = "all",
    model_control_mode: Annotated[
        ControlMode,
        typer.Option(
            help="none: load every model at start; poll: also reload on changes; "
            "explicit: load only --load-model and the load/unload API.",
            case_sensitive=False,
        ),
    ] = ControlMode.none,
    load_model: Annotated[
        list[str] | None,
        typer.Option(
            help="Model to load at start in explicit mode (repeatable; * for all).", show_default=False
        ),
    ] = None,
    repository_poll_secs: Annotated[
        float, typer.Option(help="Seconds between repository polls in poll mode.")
    ] = 15.0,
    model_load_thread_count: Annotated[
        int, typer.Option(help="Models loading at once at start-up (Triton's flag).")
    ] = 4,
    model_memory_budget: Annotated[
        str,
        typer.Option(
            help="Memory the loaded models may hold, e.g. cpu=8GiB,gpu0=70%; past it the least "
            "recently used idle models are unloaded (README: Serving many models).",
            show_default=False,
        ),
    ] = "",
    model_idle_unload_secs: Annotated[
        float, typer.Option(help="Unload a model idle this long (0: never).")
    ] = 0.0,
    model_load_on_demand: Annotated[
        str,
        typer.Option(
            help="A request for a model on disk but not loaded loads it (default: with a budget or "
            "idle unload).",
            metavar="BOOL",
        ),
    ] = "",
    model_pin: Annotated[
        list[str] | None,
        typer.Option(
            help="Model never unloaded by the budget or idle unload (repeatable).", show_default=False
        ),
    ] = None,
    model_load_wait_secs: Annotated[
        float, typer.Option(help="How long a request waits for its model's on-demand load.")
    ] = 120.0,
    backend_config: Annotated[
        list[str] | None,
        typer.Option(
            help="BACKEND,KEY=VALUE backend setting (repeatable), e.g. python,shm-default-size=2147483648.",
            show_default=False,
        ),
    ] = None,
    server_config: Annotated[
        Path | None,
        typer.Option(
            help="Server-level config (model_config_list, backend_config); default REPO/config.pbtxt.",
            exists=True,
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    log_verbose: Annotated[int, typer.Option(help="Verbose logging level (0 = off).")] = 0,
    exit_timeout_secs: Annotated[
        float, typer.Option(help="On SIGTERM/SIGINT, how long in-flight requests may take to finish.")
    ] = 30.0,
    strict_readiness: Annotated[
        str, typer.Option(help="true: /v2/health/ready only when every model is ready.", metavar="BOOL")
    ] = "true",
    exit_on_error: Annotated[
        str,
        typer.Option(help="true: stop if a model fails to load at start (Triton's default).", metavar="BOOL"),
    ] = "false",
    strict_model_config: Annotated[
        str, typer.Option(help="true: never auto-complete configs from the model files.", metavar="BOOL")
    ] = "false",
    allow_http: Annotated[str, typer.Option(help="Serve HTTP.", metavar="BOOL")] = "true",
    allow_grpc: Annotated[str, typer.Option(help="Serve gRPC.", metavar="BOOL")] = "true",
    allow_metrics: Annotated[str, typer.Option(help="Serve Prometheus metrics.", metavar="BOOL")] = "true",
    allow_gpu_metrics: Annotated[
        str, typer.Option(help="Export GPU gauges (nv_gpu_*) when NVML finds GPUs.", metavar="BOOL")
    ] = "true",
    metrics_interval_ms: Annotated[
        int, typer.Option(help="How often CPU/GPU gauges are sampled, in milliseconds.")
    ] = 2000,
    allow_cpu_metrics: Annotated[
        str, typer.Option(help="Export CPU gauges (nv_cpu_*).", metavar="BOOL")
    ] = "true",
    http_max_input_size: Annotated[int, typer.Option(help="Largest HTTP request body in bytes.")] = 64
    * 1024
    * 1024,
    max_pending_requests: Annotated[
        int, typer.Option(help="Server-wide cap on pending inference requests; beyond it 503 (0 = no cap).")
    ] = 8192,
    max_pending_bytes: Annotated[
        int, typer.Option(help="Server-wide cap on their input bytes; beyond it 503 (0 = no cap).")
    ] = 1 << 30,
    grpc_max_message_size: Annotated[
        int, typer.Option(help="Largest gRPC message in bytes (Triton's: 2147483647).")
    ] = (1 << 31) - 1,
    http_restricted_api: Annotated[
        list[str] | None,
        typer.Option(
            help="GROUPS:KEY=VALUE: these API groups need header KEY=VALUE (repeatable), "
            "e.g. model-repository,statistics:admin-key=s3cret.",
            show_default=False,
        ),
    ] = None,
    grpc_restricted_protocol: Annotated[
        list[str] | None,
        typer.Option(
            help="GROUPS:KEY=VALUE: these gRPC groups need metadata "
            "triton-grpc-protocol-KEY=VALUE (repeatable).",
            show_default=False,
        ),
    ] = None,
    grpc_use_ssl: Annotated[str, typer.Option(help="Serve gRPC over TLS.", metavar="BOOL")] = "false",
    grpc_use_ssl_mutual: Annotated[
        str,
        typer.Option(help="TLS with client certificates checked against --grpc-root-cert.", metavar="BOOL"),
    ] = "false",
    grpc_server_cert: Annotated[
        Path | None, typer.Option(help="PEM certificate (chain) of the gRPC server.", show_default=False)
    ] = None,
    grpc_server_key: Annotated[
        Path | None, typer.Option(help="PEM private key of the gRPC server.", show_default=False)
    ] = None,
    grpc_root_cert: Annotated[
        Path | None, typer.Option(help="PEM CA that client certificates must chain to.", show_default=False)
    ] = None,
    grpc_stack: Annotated[
        str,
        typer.Option(help="gRPC server: h2 (lean HTTP/2) or grpcio (grpc.aio; TLS always uses it)."),
    ] = "h2",
    allow_client_shm: Annotated[
        str,
        typer.Option(
            help="Let clients register shared-memory regions and send tensors through them "
            "(local clients only; off by default, like Triton).",
            metavar="BOOL",
        ),
    ] = "false",
    cache_config: Annotated[
        list[str] | None,
        typer.Option(
            help="Response cache: local,size=BYTES (models opt in with response_cache { enable: true }).",
            metavar="local,size=N",
            show_default=False,
        ),
    ] = None,
    log_format: Annotated[str, typer.Option(help="Log line format: default or ISO8601.")] = "default",
    log_file: Annotated[
        Path | None, typer.Option(help="Write the log to this file instead of stderr.", show_default=False)
    ] = None,
) -> None:
    """Serve model repositories over Triton's HTTP and gRPC protocols (plus Prometheus metrics)."""
    from server.app import serve as run_server
    from server.errors import ConfigError
    from server.options import ServerOptions, parse_cache_config

    try:
        cache_bytes = parse_cache_config(list(cache_config or []))
    except ConfigError as exc:
        typer.echo(f"Error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    options = ServerOptions(
        model_repositories=list(model_repository),
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        gpus=gpus,
        model_control_mode=model_control_mode.value,
        load_models=list(load_model or []),
        repository_poll_secs=repository_poll_secs,
        model_load_thread_count=model_load_thread_count,
        model_memory_budget=model_memory_budget,
        model_idle_unload_secs=model_idle_unload_secs,
        model_load_on_demand=_flag(model_load_on_demand, "--model-load-on-demand")
        if model_load_on_demand
        else None,
        pin_models=list(model_pin or []),
        model_load_wait_secs=model_load_wait_secs,
        backend_config=list(backend_config or []),
        server_config=server_config,
        log_verbose=log_verbose,
        exit_timeout_secs=exit_timeout_secs,
        strict_readiness=_flag(strict_readiness, "--strict-readiness"),
        exit_on_error=_flag(exit_on_error, "--exit-on-error"),
        strict_model_config=_flag(strict_model_config, "--strict-model-config"),
        allow_http=_flag(allow_http, "--allow-http"),
        allow_grpc=_flag(allow_grpc, "--allow-grpc"),
        allow_metrics=_flag(allow_metrics, "--allow-metrics"),
        allow_gpu_metrics=_flag(allow_gpu_metrics, "--allow-gpu-metrics"),
        metrics_interval_ms=metrics_interval_ms,
        http_max_input_size=http_max_input_size,
        allow_cpu_metrics=_flag(allow_cpu_metrics, "--allow-cpu-metrics"),
        max_pending_requests=max_pending_requests,
        max_pending_bytes=max_pending_bytes,
        grpc_max_message_size=grpc_max_message_size,
        http_restricted_api=list(http_restricted_api or []),
        grpc_restricted_protocol=list(grpc_restricted_protocol or []),
        grpc_use_ssl=_flag(grpc_use_ssl, "--grpc-use-ssl"),
        allow_client_shm=_flag(allow_client_shm, "--allow-client-shm"),
        grpc_use_ssl_mutual=_flag(grpc_use_ssl_mutual, "--grpc-use-ssl-mutual"),
        grpc_server_cert=grpc_server_cert,
        grpc_server_key=grpc_server_key,
        grpc_root_cert=grpc_root_cert,
        grpc_stack=grpc_stack,
        response_cache_byte_size=cache_bytes,
        log_format=log_format,
        log_file=str(log_file) if log_file is not None else "",
    )
    try:
        options.check()
    except ConfigError as exc:
        typer.echo(f"Error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(run_server(options))


def register(app: typer.Typer) -> None:
    app.command(
        "serve",
        help="Serve model repositories with the bundled Triton-compatible server (HTTP :8000, gRPC :8001, "
        "metrics :8002, bound to 127.0.0.1 unless --host says otherwise).",
    )(serve)
