"""`tritonctl infer` and `tritonctl models` through Typer's CliRunner against the real server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.support.server import RunningServer
from tritonctl.cli.main import app

pytestmark = pytest.mark.integration
PROTOCOLS = ["http", "grpc"]


def url(server: RunningServer, protocol: str) -> str:
    return server.http_url if protocol == "http" else server.grpc_url


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_infer_with_json_literals(server: RunningServer, protocol: str) -> None:
    code, out, err = run(
        "infer", "onnx_add_sub", "--input", "INPUT0=[1, 2, 3, 4]", "--input", "INPUT1=[[1, 1, 1, 1]]",
        "-u", url(server, protocol), "-i", protocol, "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    answer = json.loads(out)
    assert answer["model_name"] == "onnx_add_sub"
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["OUTPUT0"] == {
        "name": "OUTPUT0",
        "datatype": "FP32",
        "shape": [1, 4],
        "data": [[2, 3, 4, 5]],
    }
    assert outputs["OUTPUT1"]["data"] == [[0, 1, 2, 3]]


def test_infer_with_npy_and_json_files_and_output_selection(server: RunningServer, tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.full((2, 4), 3, np.float32))
    (tmp_path / "b.json").write_text(json.dumps([[1, 1, 1, 1], [2, 2, 2, 2]]))
    code, out, err = run(
        "infer", "ts_add_sub", "--input", f"INPUT__0={tmp_path / 'a.npy'}",
        "--input", f"INPUT__1={tmp_path / 'b.json'}",
        "--output", "OUTPUT__1", "-u", server.http_url, "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    outputs = json.loads(out)["outputs"]
    assert [o["name"] for o in outputs] == ["OUTPUT__1"]
    assert outputs[0]["data"] == [[2, 2, 2, 2], [1, 1, 1, 1]]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_infer_half_precision_and_optional_inputs(server: RunningServer, protocol: str) -> None:
    code, out, err = run(
        "infer", "py_dtypes", "--input", "IN_FP16=[0.5, 1.5]", "--input", "IN_BF16=[2.0, -1.0]",
        "--input", "IN_BOOL=[true, false]", "-u", url(server, protocol), "-i", protocol, "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    outputs = {o["name"]: o for o in json.loads(out)["outputs"]}
    assert outputs["OUT_FP16"]["data"] == [0.5, 1.5]
    assert outputs["OUT_BF16"] == {"name": "OUT_BF16", "datatype": "BF16", "shape": [2], "data": [2.0, -1.0]}
    assert outputs["OUT_BOOL"]["data"] == [True, False]


def test_infer_table_and_strings(server: RunningServer) -> None:
    code, out, err = run("infer", "py_strings", "--input", 'INPUT0=["abc", "de"]', "-u", server.http_url)
    assert code == 0, err
    assert "OUTPUT0" in out
    assert "ABC" in out
    assert "BYTES" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no_such_model", "--input", "INPUT0=[1]"], "unknown model"),
        (["py_add_sub", "--input", "INPUT0=[1, 2, 3, 4]"], "needs input(s) INPUT1"),
        (
            ["py_add_sub", "--input", "INPUT0=[1, 2, 3]", "--input", "INPUT1=[1, 2, 3, 4]"],
            "expects shape [-1, 4]",
        ),
        (["py_add_sub", "--input", "NOPE=[1]"], "has no input 'NOPE'"),
        (["py_add_sub", "--input", "INPUT0"], "must look like NAME=VALUE"),
        (["py_add_sub", "--input", "INPUT0=missing.npy", "--input", "INPUT1=[1]"], "no such .npy file"),
    ],
)
def test_infer_errors_are_clear(server: RunningServer, args: list[str], message: str) -> None:
    code, _out, err = run("infer", *args, "-u", server.http_url)
    assert code == 1
    assert message in err


def test_infer_without_a_server() -> None:
    code, _out, err = run("infer", "m", "--input", "X=[1]", "-u", "127.0.0.1:1")
    assert code == 1
    assert "error:" in err


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_models_list_ready_config_stats(server: RunningServer, protocol: str) -> None:
    common = ["-u", url(server, protocol), "-i", protocol]
    code, out, err = run("models", "list", *common, "--format", "json")
    assert code == 0, err
    entries = {entry["name"]: entry for entry in json.loads(out)}
    assert entries["py_identity"]["state"] == "READY"
    assert entries["py_identity"]["memory_bytes"] > 1 << 20  # its worker's PSS (statistics memory_usage)
    assert "loadable_py" in entries and "memory_bytes" not in entries["loadable_py"]
    code, out, _ = run("models", "list", *common)
    assert code == 0
    assert "py_identity" in out
    assert "READY" in out
    assert "MiB" in out

    assert run("models", "ready", "py_identity", *common)[:2] == (0, "py_identity: ready\n")
    assert run("models", "ready", "loadable_py", *common)[:2] == (1, "loadable_py: not ready\n")

    code, out, err = run("models", "config", "onnx_add_sub", *common)
    assert code == 0, err
    config = json.loads(out)
    assert config["max_batch_size"] == 8
    assert config["input"][0]["dims"] == [4]

    code, out, err = run("models", "stats", "py_identity", *common, "--format", "json")
    assert code == 0, err
    assert json.loads(out)[0]["name"] == "py_identity"
    code, out, err = run("models", "stats", *common)
    assert code == 0, err
    assert "onnx_add_sub" in out


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_models_load_with_config_override_and_unload(
    server: RunningServer, protocol: str, tmp_path: Path
) -> None:
    common = ["-u", url(server, protocol), "-i", protocol]
    override = tmp_path / "override.pbtxt"
    override.write_text(
        'name: "loadable_py" backend: "python" max_batch_size: 8\n'
        'input [{ name: "INPUT0" data_type: TYPE_FP32 dims: [4] }]\n'
        'output [{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [4] }]\n'
        "instance_group [{ count: 2 kind: KIND_CPU }]\n"
    )
    try:
        code, out, err = run("models", "load", "loadable_py", "--config", str(override), *common)
        assert (code, out) == (0, "loadable_py: loaded\n"), err
        code, out, _ = run("models", "config", "loadable_py", *common)
        assert json.loads(out)["instance_group"][0]["count"] == 2
        literal = json.dumps({**json.loads(out), "instance_group": [{"count": 1, "kind": "KIND_CPU"}]})
        assert run("models", "load", "loadable_py", "--config", literal, *common)[0] == 0
        code, out, _ = run("models", "config", "loadable_py", *common)
        assert json.loads(out)["instance_group"][0]["count"] == 1
    finally:
        code, out, err = run("models", "unload", "loadable_py", *common)
    assert (code, out) == (0, "loadable_py: unloaded\n"), err
    assert run("models", "ready", "loadable_py", *common)[0] == 1


def test_models_load_errors(server: RunningServer) -> None:
    code, _out, err = run("models", "load", "loadable_py", "--config", "{not json", "-u", server.http_url)
    assert code == 1
    assert "neither a file nor valid JSON" in err
    code, _out, err = run("models", "load", "no_such_model", "-u", server.http_url)
    assert code == 1
    assert "no_such_model" in err
