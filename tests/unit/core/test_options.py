"""server/options.py: Triton's command-line spellings -> ServerOptions."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.errors import ConfigError
from server.options import ServerOptions, backend_config_map, parse_tritonserver_args


def test_the_seed_command_line_parses_as_triton_would() -> None:
    options = parse_tritonserver_args(
        [
            "--model-repository=/models",
            "--log-verbose=1",
            "--backend-config=python,shm-default-size=2147483648",
        ]
    )
    assert options.model_repositories == [Path("/models")]
    assert options.log_verbose == 1
    assert options.backend_config == ["python,shm-default-size=2147483648"]
    assert backend_config_map(options.backend_config) == {"python": {"shm-default-size": "2147483648"}}
    # Triton's defaults, except the address: we bind 127.0.0.1 unless told otherwise.
    assert (options.http_port, options.grpc_port, options.metrics_port) == (8000, 8001, 8002)
    assert options.http_host == options.grpc_host == options.metrics_host == "127.0.0.1"
    assert options.exit_on_error is True and options.strict_readiness is True
    assert options.model_control_mode == "none"


def test_space_separated_values_and_repeated_flags() -> None:
    options = parse_tritonserver_args(
        [
            "--model-repository", "/a", "--model-store=/b",
            "--model-control-mode", "EXPLICIT", "--load-model=x", "--load-model", "*",
            "--http-port", "9000", "--grpc-port=9001", "--metrics-port=0",
            "--http-address=0.0.0.0", "--repository-poll-secs=5", "--exit-timeout-secs=3",
        ]
    )  # fmt: skip
    assert options.model_repositories == [Path("/a"), Path("/b")]
    assert options.model_control_mode == "explicit"
    assert options.load_models == ["x", "*"]
    assert (options.http_port, options.grpc_port, options.metrics_port) == (9000, 9001, 0)
    assert options.http_host == "0.0.0.0" and options.grpc_host == "127.0.0.1"
    assert options.repository_poll_secs == 5 and options.exit_timeout_secs == 3


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--allow-grpc=false"], False),
        (["--allow-grpc=0"], False),
        (["--allow-grpc", "no"], False),
        (["--allow-grpc"], True),
        (["--allow-grpc=TRUE"], True),
    ],
)
def test_boolean_flags_take_triton_values(argv: list[str], expected: bool) -> None:
    options = parse_tritonserver_args(["--model-repository=/m", *argv])
    assert options.allow_grpc is expected


def test_exit_on_error_and_strict_readiness_can_be_turned_off() -> None:
    options = parse_tritonserver_args(
        ["--model-repository=/m", "--exit-on-error=false", "--strict-readiness=false"]
    )
    assert options.exit_on_error is False and options.strict_readiness is False


def test_bad_boolean_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="--strict-readiness expects true or false, got 'maybe'"):
        parse_tritonserver_args(["--model-repository=/m", "--strict-readiness=maybe"])


def test_harmless_triton_flags_are_accepted_with_a_warning() -> None:
    options = parse_tritonserver_args(
        ["--model-repository=/m", "--pinned-memory-pool-byte-size=0", "--backend-directory", "/opt/b"]
    )
    assert sorted(options.warnings) == [
        "--backend-directory has no effect in this server; ignored",
        "--pinned-memory-pool-byte-size has no effect in this server; ignored",
    ]


def test_disable_auto_complete_means_strict_model_config() -> None:
    options = parse_tritonserver_args(["--model-repository=/m", "--disable-auto-complete-config"])
    assert options.strict_model_config is True
    assert not options.warnings


def test_legacy_poll_flag_selects_poll_mode() -> None:
    options = parse_tritonserver_args(["--model-repository=/m", "--allow-poll-model-repository=true"])
    assert options.model_control_mode == "poll"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model-repository=/m", "--no-such-flag=1"], "unrecognized option"),
        (["--model-repository=/m", "--grpc-use-ssl=true"], "--grpc-use-ssl needs --grpc-server-cert"),
        (["--model-repository=/m", "--allow-sagemaker=true"], "SageMaker endpoint is not supported"),
        ([], "--model-repository must be specified"),
        (["--model-repository=/m", "--model-control-mode=sometimes"], "--model-control-mode"),
        (["--model-repository=/m", "--load-model=a"], "--load-model can only be used with"),
        (["--model-repository=/m", "--http-port=70000"], "--http-port must be within"),
        (["--model-repository=/m", "--http-port=eighty"], "invalid int value"),
        (["--model-repository=/m", "--backend-config=python"], "<backend>,<setting>=<value>"),
        (
            ["--model-repository=/m", "--model-control-mode=poll", "--repository-poll-secs=0"],
            "greater than 0",
        ),
    ],
)
def test_unusable_command_lines_are_refused(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_tritonserver_args(argv)


def test_global_backend_setting_has_no_backend() -> None:
    assert backend_config_map(["shm-default-size=1", "python,shm-growth-byte-size=2"]) == {
        "": {"shm-default-size": "1"},
        "python": {"shm-growth-byte-size": "2"},
    }


def test_server_options_default_keeps_serving_when_a_model_fails() -> None:
    # `tritonctl serve` builds ServerOptions directly: a failing model does not stop the server.
    assert ServerOptions(model_repositories=[Path("/m")]).exit_on_error is False


def test_many_models_flags() -> None:
    """Issue #18: Triton's --model-load-thread-count takes effect; budget, idle unload, pins, on-demand."""
    options = parse_tritonserver_args(
        [
            "--model-repository=/m",
            "--model-load-thread-count=8",
            "--model-memory-budget=cpu=8GiB,gpu0=70%",
            "--model-idle-unload-secs=300",
            "--model-pin=a",
            "--model-pin=b",
            "--model-load-wait-secs=30",
        ]
    )
    assert options.model_load_thread_count == 8
    assert options.model_memory_budget == "cpu=8GiB,gpu0=70%"
    assert options.pin_models == ["a", "b"]
    assert options.on_demand  # on by default with a budget
    assert not options.warnings
    off = parse_tritonserver_args(
        ["--model-repository=/m", "--model-load-on-demand=false", "--model-idle-unload-secs=5"]
    )
    assert not off.on_demand
    assert not parse_tritonserver_args(["--model-repository=/m"]).on_demand
    with pytest.raises(ConfigError, match="--model-load-thread-count must be 1 or more"):
        parse_tritonserver_args(["--model-repository=/m", "--model-load-thread-count=0"]).check()
