"""One real server (explicit model control) for every front-end test, over a repository of
python, ONNX and TorchScript toy models; `loadable_*` models start unloaded for the load/unload
tests, `never_loaded` is never loaded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.models import (
    build_config,
    write_config,
    write_onnx_model,
    write_python_model,
    write_python_source,
    write_torchscript_model,
)
from tests.support.server import RunningServer, start_server

# Wire type -> config type of every input of the `py_dtypes` model (input IN_<T>, output OUT_<T>).
DTYPES = (
    "BOOL",
    "UINT8",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT64",
    "FP16",
    "FP32",
    "FP64",
    "BF16",
    "BYTES",
)

_DTYPES_SOURCE = """\
import json

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        pairs = zip(config["input"], config["output"])
        self.names = [(i["name"], o["name"], i["data_type"]) for i, o in pairs]

    def execute(self, requests):
        responses = []
        for request in requests:
            outputs = []
            for in_name, out_name, data_type in self.names:
                tensor = pb_utils.get_input_tensor_by_name(request, in_name)
                if tensor is None:
                    continue
                if data_type == "TYPE_BF16":  # numpy has no bfloat16: pass it through DLPack
                    outputs.append(pb_utils.Tensor.from_dlpack(out_name, tensor.to_dlpack()))
                else:
                    outputs.append(pb_utils.Tensor(out_name, tensor.as_numpy()))
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses
"""

STARTUP_MODELS = ("py_identity", "py_add_sub", "py_strings", "py_dtypes", "onnx_add_sub", "ts_add_sub")
LOADABLE_MODELS = ("loadable_py", "loadable_onnx")


def write_dtypes_model(repo: Path) -> None:
    from tritonclient.grpc import model_config_pb2 as mc

    def config_type(wire: str) -> int:
        return int(mc.DataType.Value("TYPE_STRING" if wire == "BYTES" else f"TYPE_{wire}"))

    config = build_config(
        "py_dtypes",
        backend="python",
        inputs=[(f"IN_{t}", config_type(t), [-1]) for t in DTYPES],
        outputs=[(f"OUT_{t}", config_type(t), [-1]) for t in DTYPES],
        max_batch_size=0,
    )
    for tensor in config.input:
        tensor.optional = True  # a request sends only the types it tests
    write_config(repo / "py_dtypes", config)
    write_python_source(repo / "py_dtypes", _DTYPES_SOURCE)


def write_protocol_repository(repo: Path) -> None:
    write_python_model(repo, "py_identity", "identity", dims=[16])
    write_python_model(repo, "py_add_sub", "add_sub", dims=[4])
    write_python_model(repo, "py_strings", "strings", dims=[-1])
    write_dtypes_model(repo)
    write_onnx_model(repo, "onnx_add_sub", "add_sub", dims=[4])
    write_torchscript_model(repo, "ts_add_sub", "add_sub", dims=[4])
    write_python_model(repo, "loadable_py", "identity", dims=[4])
    write_onnx_model(repo, "loadable_onnx", "identity", dims=[4])
    write_python_model(repo, "never_loaded", "identity", dims=[4])  # no test loads it


@pytest.fixture(scope="session")
def protocol_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("protocol_repo")
    write_protocol_repository(repo)
    return repo


@pytest.fixture(scope="session")
def server(protocol_repo: Path) -> Iterator[RunningServer]:
    loads = [f"--load-model={name}" for name in STARTUP_MODELS]
    # grpc.aio explicitly: the default stack (h2) runs the same suite in test_grpc_h2.py.
    with start_server(
        protocol_repo, "--grpc-stack=grpcio", "--model-control-mode=explicit", *loads, timeout=180
    ) as running:
        yield running
