"""Server-level config and --backend-config -> WorkerOptions (server/app.py helpers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.app import build_worker_options, load_server_configs
from server.errors import ConfigError
from server.options import ServerOptions

SEED_SERVER_CONFIG = """
model_config_list: [
{
config: {
name: "my_resnet"
platform: "pytorch"
max_batch_size: 16
instance_group: [ { count: 2 kind: KIND_GPU gpus: [0] } ]
}
}
]
backend_config: [
{
backend: "python"
parameters: {
key: "shm-default-size"
value: "4294967296" # 4GB
}
}
]
"""


def test_the_seed_server_config_sets_the_python_arena_size(tmp_path: Path) -> None:
    (tmp_path / "config.pbtxt").write_text(SEED_SERVER_CONFIG)
    options = ServerOptions(model_repositories=[tmp_path])
    configs = load_server_configs(options)
    assert configs[tmp_path.resolve()].model_config_list[0].config.name == "my_resnet"
    worker_options = build_worker_options(options, configs)
    assert worker_options.shm_default_size == 4294967296
    assert worker_options.backend_parameters["python"]["shm-default-size"] == "4294967296"


def test_command_line_backend_config_wins_over_the_file(tmp_path: Path) -> None:
    (tmp_path / "config.pbtxt").write_text(SEED_SERVER_CONFIG)
    options = ServerOptions(
        model_repositories=[tmp_path],
        backend_config=["python,shm-default-size=2147483648", "shm-growth-byte-size=1048576"],
    )
    worker_options = build_worker_options(options, load_server_configs(options))
    assert worker_options.shm_default_size == 2147483648
    assert worker_options.shm_growth_size == 1048576  # a global setting reaches every backend


def test_explicit_server_config_applies_to_every_repository(tmp_path: Path) -> None:
    config_file = tmp_path / "server.pbtxt"
    config_file.write_text(SEED_SERVER_CONFIG)
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    options = ServerOptions(model_repositories=[first, second], server_config=config_file)
    configs = load_server_configs(options)
    assert configs[first.resolve()] is configs[second.resolve()] is not None


def test_no_server_config_means_defaults(tmp_path: Path) -> None:
    options = ServerOptions(model_repositories=[tmp_path])
    configs = load_server_configs(options)
    assert configs == {tmp_path.resolve(): None}
    assert build_worker_options(options, configs).shm_default_size == 16 * 1024 * 1024


def test_a_broken_server_config_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "config.pbtxt").write_text("backend_config: [ { nonsense: 1 } ]")
    with pytest.raises(ConfigError, match="nonsense"):
        load_server_configs(ServerOptions(model_repositories=[tmp_path]))
