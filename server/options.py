"""Server options, and a parser for `tritonserver`'s own command-line spellings.

`ServerOptions` is the one object `serve()` takes; `tritonctl serve` (typer) and
`parse_tritonserver_args` (the `tritonserver`-compatible entry points: `python -m server`, the
container's `tritonserver`) both build it.

Triton's flags are `--name=value` or `--name value`; booleans take a value (`--allow-grpc=false`),
and we also accept a bare `--allow-grpc`. Triton flags that have no meaning here (pinned memory
pools, backend directories, tracing...) are accepted and ignored with a warning, so existing
command lines keep working; flags that would silently change the protocol (SageMaker/Vertex
endpoints) are refused, and so is any flag Triton does not have, except our own few
(`--max-pending-requests`, `--max-pending-bytes`, `--grpc-max-message-size`; README "Reliability
and security"). TLS for gRPC and restricted APIs take Triton's flags.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from server.errors import ConfigError

DEFAULT_HTTP_MAX_INPUT_SIZE = 64 * 1024 * 1024
DEFAULT_GRPC_MAX_MESSAGE_SIZE = (1 << 31) - 1  # Triton's (INT32_MAX)
# Server-wide admission caps (server/core/limits.py): requests admitted and not answered, their input bytes.
DEFAULT_MAX_PENDING_REQUESTS = 8192
DEFAULT_MAX_PENDING_BYTES = 1 << 30
CONTROL_MODES = ("none", "poll", "explicit")
GRPC_STACKS = ("grpcio", "h2")

# Triton flags accepted for compatibility but without effect here (the value is still parsed).
_IGNORED_FLAGS = (
    "backend-directory",
    "repoagent-directory",
    "cache-directory",
    "pinned-memory-pool-byte-size",
    "cuda-memory-pool-byte-size",
    "cuda-virtual-address-size",
    "min-supported-compute-capability",
    "buffer-manager-thread-count",
    "model-load-retry-count",
    "model-namespacing",
    "enable-peer-access",
    "rate-limit",
    "rate-limit-resource",
    "host-policy",
    "http-thread-count",
    "http-header-forward-pattern",
    "grpc-infer-allocation-pool-size",
    "grpc-max-response-pool-size",
    "grpc-keepalive-time",
    "grpc-keepalive-timeout",
    "grpc-keepalive-permit-without-calls",
    "grpc-http2-max-pings-without-data",
    "grpc-http2-min-recv-ping-interval-without-data",
    "grpc-http2-max-ping-strikes",
    "grpc-infer-response-compression-level",
    "grpc-header-forward-pattern",
    "reuse-http-port",
    "reuse-grpc-port",
    "trace-config",
    "trace-file",
    "trace-level",
    "trace-rate",
    "trace-count",
    "trace-log-frequency",
    "metrics-config",
    "disable-auto-complete-config",
)

# Triton flags we refuse: honouring them silently would change security or the wire protocol.
_REFUSED_FLAGS = {
    "allow-sagemaker": "the SageMaker endpoint is not supported",
    "sagemaker-port": "the SageMaker endpoint is not supported",
    "sagemaker-safe-port-range": "the SageMaker endpoint is not supported",
    "sagemaker-thread-count": "the SageMaker endpoint is not supported",
    "allow-vertex-ai": "the Vertex AI endpoint is not supported",
    "vertex-ai-port": "the Vertex AI endpoint is not supported",
    "vertex-ai-thread-count": "the Vertex AI endpoint is not supported",
    "vertex-ai-default-model": "the Vertex AI endpoint is not supported",
}

_BOOL_FLAGS = (
    "allow-http",
    "allow-grpc",
    "allow-metrics",
    "allow-gpu-metrics",
    "allow-cpu-metrics",
    "strict-readiness",
    "exit-on-error",
    "grpc-use-ssl",
    "grpc-use-ssl-mutual",
    "log-info",
    "log-warning",
    "log-error",
    "allow-client-shm",
    "model-load-on-demand",
)
# Flags whose parsed value goes straight into the ServerOptions field of the same name.
_VALUE_FIELDS = (
    "host",
    "http_address",
    "grpc_address",
    "metrics_address",
    "gpus",
    "server_id",
    "http_port",
    "grpc_port",
    "metrics_port",
    "log_verbose",
    "log_format",
    "log_file",
    "http_max_input_size",
    "metrics_interval_ms",
    "repository_poll_secs",
    "exit_timeout_secs",
    "max_pending_requests",
    "max_pending_bytes",
    "model_load_thread_count",
    "model_memory_budget",
    "model_idle_unload_secs",
    "model_load_wait_secs",
    "grpc_max_message_size",
    "grpc_stack",
)
_TRUE = {"true", "1", "yes", "on", "y"}
_FALSE = {"false", "0", "no", "off", "n"}


@dataclass
class ServerOptions:
    """Everything `serve()` needs; defaults are Triton's, except that we bind 127.0.0.1."""

    model_repositories: list[Path] = field(default_factory=list)
    host: str = "127.0.0.1"
    http_address: str | None = None  # None: `host`
    grpc_address: str | None = None
    metrics_address: str | None = None
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    allow_http: bool = True
    allow_grpc: bool = True
    allow_metrics: bool = True
    gpus: str = "all"  # "all" | "none" | "0,1"
    model_control_mode: str = "none"
    load_models: list[str] = field(default_factory=list)
    repository_poll_secs: float = 15.0
    backend_config: list[str] = field(default_factory=list)  # "python,shm-default-size=N"
    log_verbose: int = 0
    # Triton's log settings (also GET/POST /v2/logging at run time, except log_file).
    log_info: bool = True
    log_warning: bool = True
    log_error: bool = True
    log_format: str = "default"  # "default" | "ISO8601"
    log_file: str = ""  # "" = stderr
    exit_timeout_secs: float = 30.0
    server_config: Path | None = None
    strict_readiness: bool = True
    # Triton exits when a model fails at start-up; `tritonctl serve` keeps serving the others.
    exit_on_error: bool = False
    strict_model_config: bool = False  # True: no auto-complete from model files
    http_max_input_size: int = DEFAULT_HTTP_MAX_INPUT_SIZE
    metrics_interval_ms: int = 2000
    allow_gpu_metrics: bool = True
    allow_cpu_metrics: bool = True
    server_id: str = "triton"
    # Reliability and security (issue #7; README "Reliability and security").
    max_pending_requests: int = DEFAULT_MAX_PENDING_REQUESTS  # server-wide, 0 = no cap
    max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES  # input bytes of those requests, 0 = no cap
    grpc_max_message_size: int = DEFAULT_GRPC_MAX_MESSAGE_SIZE
    http_restricted_api: list[str] = field(default_factory=list)  # "GROUP[,GROUP]:KEY=VALUE"
    grpc_restricted_protocol: list[str] = field(default_factory=list)
    grpc_use_ssl: bool = False
    grpc_use_ssl_mutual: bool = False  # implies grpc_use_ssl; needs grpc_root_cert
    grpc_server_cert: Path | None = None
    grpc_server_key: Path | None = None
    grpc_root_cert: Path | None = None
    # "grpcio" (grpc.aio) or "h2" (our lean HTTP/2 server; TLS always uses grpcio).
    grpc_stack: str = "h2"
    # Client shared memory (register regions, tensors in them): off by default, like Triton since
    # 2.6x (README "Client shared memory" says why); True accepts `--allow-client-shm=true`.
    allow_client_shm: bool = False
    # Response cache (--cache-config local,size=N or --response-cache-byte-size N): 0 = none.
    response_cache_byte_size: int = 0
    # Many models (issue #18; README "Serving many models"): parallel loads (Triton's flag), a
    # memory budget with LRU eviction ("cpu=8GiB,gpu0=70%"), idle unload, on-demand loading
    # (None: on when a budget or idle unload is set), pinned models, how long a request waits
    # for its model's on-demand load.
    model_load_thread_count: int = 4
    model_memory_budget: str = ""
    model_idle_unload_secs: float = 0.0
    model_load_on_demand: bool | None = None
    pin_models: list[str] = field(default_factory=list)
    model_load_wait_secs: float = 120.0
    # Flags accepted for compatibility that had no effect: logged once at start-up.
    warnings: list[str] = field(default_factory=list)

    @property
    def http_host(self) -> str:
        return self.http_address or self.host

    @property
    def grpc_host(self) -> str:
        return self.grpc_address or self.host

    @property
    def metrics_host(self) -> str:
        return self.metrics_address or self.host

    def check(self) -> None:
        """Reject combinations that cannot work, with the flag to fix in the message."""
        if not self.model_repositories:
            raise ConfigError("--model-repository must be specified at least once")
        if self.model_control_mode not in CONTROL_MODES:
            raise ConfigError(
                f"unexpected value for --model-control-mode: '{self.model_control_mode}' "
                f"(expected one of {', '.join(CONTROL_MODES)})"
            )
        if self.load_models and self.model_control_mode != "explicit":
            raise ConfigError("--load-model can only be used with --model-control-mode=explicit")
        if self.repository_poll_secs <= 0 and self.model_control_mode == "poll":
            raise ConfigError("--repository-poll-secs must be greater than 0 in poll mode")
        for name, port in (
            ("http", self.http_port),
            ("grpc", self.grpc_port),
            ("metrics", self.metrics_port),
        ):
            if not 0 <= port <= 65535:
                raise ConfigError(f"--{name}-port must be within 0..65535, got {port}")
        for entry in self.backend_config:
            parse_backend_config_entry(entry)
        self._check_many_models()
        if self.log_format not in ("default", "ISO8601"):
            raise ConfigError(
                f"invalid argument for --log-format, got: {self.log_format} (default or ISO8601)"
            )
        if self.response_cache_byte_size < 0:
            raise ConfigError(f"--cache-config size must be 0 or more, got {self.response_cache_byte_size}")
        self._check_security()

    @property
    def on_demand(self) -> bool:
        """Whether a request loads a model that is not loaded (default: with a budget or idle unload)."""
        if self.model_load_on_demand is not None:
            return self.model_load_on_demand
        return bool(self.model_memory_budget) or self.model_idle_unload_secs > 0

    def _check_many_models(self) -> None:
        if self.model_load_thread_count < 1:
            raise ConfigError(
                f"--model-load-thread-count must be 1 or more, got {self.model_load_thread_count}"
            )
        for flag, value in (
            ("--model-idle-unload-secs", self.model_idle_unload_secs),
            ("--model-load-wait-secs", self.model_load_wait_secs),
        ):
            if value < 0:
                raise ConfigError(f"{flag} must be 0 or more, got {value:g}")

    def _check_security(self) -> None:
        from server.vocabulary.restrictions import GRPC_HEADER_PREFIX, parse_restrictions

        parse_restrictions(self.http_restricted_api, flag="--http-restricted-api")
        parse_restrictions(
            self.grpc_restricted_protocol, flag="--grpc-restricted-protocol", header_prefix=GRPC_HEADER_PREFIX
        )
        for flag, value in (
            ("--max-pending-requests", self.max_pending_requests),
            ("--max-pending-bytes", self.max_pending_bytes),
        ):
            if value < 0:
                raise ConfigError(f"{flag} must be 0 (no cap) or more, got {value}")
        if not 0 < self.grpc_max_message_size <= DEFAULT_GRPC_MAX_MESSAGE_SIZE:
            raise ConfigError(
                f"--grpc-max-message-size must be within 1..{DEFAULT_GRPC_MAX_MESSAGE_SIZE}, "
                f"got {self.grpc_max_message_size}"
            )
        if self.grpc_use_ssl_mutual:
            self.grpc_use_ssl = True  # as in Triton
            if self.grpc_root_cert is None:
                raise ConfigError(
                    "--grpc-use-ssl-mutual needs --grpc-root-cert (the CA of client certificates)"
                )
        if self.grpc_stack not in GRPC_STACKS:
            raise ConfigError(
                f"--grpc-stack must be one of {', '.join(GRPC_STACKS)}, got '{self.grpc_stack}'"
            )
        if self.grpc_use_ssl and (self.grpc_server_cert is None or self.grpc_server_key is None):
            raise ConfigError("gRPC TLS: --grpc-use-ssl needs --grpc-server-cert and --grpc-server-key")


def parse_backend_config_entry(entry: str) -> tuple[str, str, str]:
    """`python,shm-default-size=N` -> ("python", "shm-default-size", "N").

    Triton also accepts a global `setting=value` (no backend): its backend is "".
    """
    backend, _, setting = entry.rpartition(",")
    key, sep, value = setting.partition("=")
    if not sep or not key.strip():
        raise ConfigError(
            f"--backend-config '{entry}' must look like <backend>,<setting>=<value> "
            "(e.g. python,shm-default-size=2147483648)"
        )
    return backend.strip(), key.strip(), value.strip()


def backend_config_map(entries: list[str]) -> dict[str, dict[str, str]]:
    """The --backend-config entries grouped by backend (global settings under "")."""
    result: dict[str, dict[str, str]] = {}
    for entry in entries:
        backend, key, value = parse_backend_config_entry(entry)
        result.setdefault(backend, {})[key] = value
    return result


def parse_cache_config(entries: list[str]) -> int:
    """`--cache-config local,size=N` entries (Triton's `<cache>,<key>=<value>`) -> the cache size.

    Only Triton's `local` cache exists here (in the server's memory, LRU by bytes)."""
    size = 0
    for entry in entries:
        cache, _, setting = entry.partition(",")
        key, sep, value = setting.partition("=")
        cache, key, value = cache.strip(), key.strip(), value.strip()
        if cache != "local":
            raise ConfigError(
                f"--cache-config '{entry}': only the local cache is supported "
                "(--cache-config local,size=<bytes>)"
            )
        if not sep or key != "size":
            raise ConfigError(f"--cache-config '{entry}': the local cache takes size=<bytes>")
        try:
            size = int(value)
        except ValueError:
            raise ConfigError(f"--cache-config '{entry}': size must be a number of bytes") from None
        if size <= 0:
            raise ConfigError(f"--cache-config '{entry}': size must be more than 0 bytes")
    return size


def parse_bool(value: str | bool, flag: str) -> bool:
    if isinstance(value, bool):
        return value
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{flag} expects true or false, got '{value}'")


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that raises ConfigError instead of printing and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(message)


def _build_parser() -> _ArgumentParser:
    parser = _ArgumentParser(prog="tritonserver", add_help=False, allow_abbrev=False)
    add = parser.add_argument
    add("--model-repository", "--model-store", dest="model_repositories", action="append", default=[])
    add("--host", dest="host")
    add("--http-address", dest="http_address")
    add("--grpc-address", dest="grpc_address")
    add("--metrics-address", dest="metrics_address")
    add("--http-port", dest="http_port", type=int)
    add("--grpc-port", dest="grpc_port", type=int)
    add("--metrics-port", dest="metrics_port", type=int)
    for flag in _BOOL_FLAGS:
        add(f"--{flag}", dest=flag.replace("-", "_"), nargs="?", const="true")
    add("--strict-model-config", dest="strict_model_config", nargs="?", const="true")
    add("--allow-poll-model-repository", dest="allow_poll_model_repository", nargs="?", const="true")
    add("--gpus", dest="gpus")
    add("--model-control-mode", dest="model_control_mode")
    add("--load-model", dest="load_models", action="append", default=[])
    add("--repository-poll-secs", dest="repository_poll_secs", type=float)
    add("--backend-config", dest="backend_config", action="append", default=[])
    add("--cache-config", dest="cache_config", action="append", default=[])
    add("--response-cache-byte-size", dest="response_cache_byte_size", type=int)
    add("--log-verbose", dest="log_verbose", type=int)
    add("--log-format", dest="log_format")
    add("--log-file", dest="log_file")
    add("--exit-timeout-secs", dest="exit_timeout_secs", type=float)
    add("--server-config", dest="server_config")
    add("--http-max-input-size", dest="http_max_input_size", type=int)
    add("--id", dest="server_id")
    add("--metrics-interval-ms", dest="metrics_interval_ms", type=int)
    add("--max-pending-requests", dest="max_pending_requests", type=int)
    add("--max-pending-bytes", dest="max_pending_bytes", type=int)
    add("--grpc-max-message-size", dest="grpc_max_message_size", type=int)
    add("--grpc-stack", dest="grpc_stack")
    add("--model-load-thread-count", dest="model_load_thread_count", type=int)
    add("--model-memory-budget", dest="model_memory_budget")
    add("--model-idle-unload-secs", dest="model_idle_unload_secs", type=float)
    add("--model-load-wait-secs", dest="model_load_wait_secs", type=float)
    add("--model-pin", dest="pin_models", action="append", default=[])
    add("--http-restricted-api", dest="http_restricted_api", action="append", default=[])
    add("--grpc-restricted-protocol", dest="grpc_restricted_protocol", action="append", default=[])
    for flag in ("grpc-server-cert", "grpc-server-key", "grpc-root-cert"):
        add(f"--{flag}", dest=flag.replace("-", "_"))
    for flag in _IGNORED_FLAGS:
        add(f"--{flag}", dest=f"ignored:{flag}", action="append", nargs="?", const="")
    for flag in _REFUSED_FLAGS:
        add(f"--{flag}", dest=f"refused:{flag}", action="append", nargs="?", const="")
    return parser


def parse_tritonserver_args(argv: list[str]) -> ServerOptions:
    """Build ServerOptions from a `tritonserver` command line (Triton's spellings and defaults).

    Unlike ServerOptions' default, `--exit-on-error` defaults to true here, as in Triton.
    Raises ConfigError for unknown or refused flags and bad values.
    """
    if any(arg in ("-h", "--help") for arg in argv):
        raise ConfigError(
            "usage: tritonserver --model-repository=<path> [--model-control-mode=none|poll|explicit] "
            "[--load-model=<name>]... [--http-port=N] [--grpc-port=N] [--metrics-port=N] "
            "[--backend-config=<backend>,<setting>=<value>]... (see README: tritonctl serve)"
        )
    namespace, extra = _build_parser().parse_known_args(argv)
    if extra:
        raise ConfigError(f"unrecognized option(s) for tritonserver: {' '.join(extra)}")
    values = vars(namespace)

    options = ServerOptions(exit_on_error=True)
    options.model_repositories = [Path(path) for path in values["model_repositories"]]
    for name in _VALUE_FIELDS:
        if values[name] is not None:
            setattr(options, name, values[name])
    for flag in _BOOL_FLAGS:
        name = flag.replace("-", "_")
        if values[name] is not None:
            setattr(options, name, parse_bool(values[name], f"--{flag}"))
    if values["strict_model_config"] is not None:
        options.strict_model_config = parse_bool(values["strict_model_config"], "--strict-model-config")
    if values["model_control_mode"] is not None:
        options.model_control_mode = values["model_control_mode"].strip().lower()
    elif values["allow_poll_model_repository"] is not None and parse_bool(
        values["allow_poll_model_repository"], "--allow-poll-model-repository"
    ):
        options.model_control_mode = "poll"  # Triton's legacy spelling of poll mode
    options.load_models = list(values["load_models"])
    options.pin_models = list(values["pin_models"])
    options.backend_config = list(values["backend_config"])
    if values["response_cache_byte_size"] is not None:  # Triton's deprecated spelling of the local cache
        options.response_cache_byte_size = values["response_cache_byte_size"]
    if values["cache_config"]:
        options.response_cache_byte_size = parse_cache_config(values["cache_config"])
    if values["server_config"] is not None:
        options.server_config = Path(values["server_config"])
    options.http_restricted_api = list(values["http_restricted_api"])
    options.grpc_restricted_protocol = list(values["grpc_restricted_protocol"])
    for name in ("grpc_server_cert", "grpc_server_key", "grpc_root_cert"):
        if values[name]:
            setattr(options, name, Path(values[name]))

    for key, value in values.items():
        if value is None:
            continue
        if key.startswith("refused:"):
            flag = key.removeprefix("refused:")
            raise ConfigError(f"--{flag} is not supported: {_REFUSED_FLAGS[flag]}")
        if key.startswith("ignored:"):
            flag = key.removeprefix("ignored:")
            if flag == "disable-auto-complete-config":
                options.strict_model_config = True
                continue
            options.warnings.append(f"--{flag} has no effect in this server; ignored")
    options.check()
    return options
