"""The model repositories every system serves, written fresh into a temporary folder each run.

The same folder serves ours and the real Triton wherever the model is a python-backend model; for
the ONNX MLP, Triton gets a copy whose config points at a python-backend `model.py` that calls
onnxruntime (its bundled build has no ONNX backend). MLServer gets the P1 identity as a custom
runtime that decodes and encodes with its NumpyCodec, as an MLServer user would write it.
"""

from __future__ import annotations

import itertools
import json
import shutil
import sys
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from benchmarks.peers.tools import ROOT

sys.path.insert(0, str(ROOT))
from server.repository.instance_mode import INSTANCE_MODE_KEY, INSTANCE_MODES, PROCESS
from tests.support.models import build_config, write_config, write_python_model
from tests.tools.real_triton import onnx_python_wrapper

IDENTITY = "identity"
MLP = "mlp"
IMAGE = "image"
P1_DIMS = [16]
P3_DIMS = [3, 224, 224]
MLP_SIZES = (256, 1024, 1024, 10)
MAX_BATCH_SIZE = 64
FP32 = model_config_pb2.DataType.Value("TYPE_FP32")


def write_identity(repo: Path, name: str = IDENTITY, dims: list[int] | None = None) -> Path:
    """Python-backend identity, FP32, `max_batch_size 64`, `dynamic_batching {}` (P1, P3, P4)."""
    return write_python_model(
        repo, name, "identity", max_batch_size=MAX_BATCH_SIZE, dynamic_batching=True, dims=dims or P1_DIMS
    )


SEQUENCE = "accumulator"
SEQUENCE_MODEL = """\
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    \"\"\"Running sum per sequence, kept by the model (explicit state keyed by correlation id).\"\"\"

    def initialize(self, args):
        self.sums = {}

    def execute(self, requests):
        responses = []
        for request in requests:
            value = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            start = pb_utils.get_input_tensor_by_name(request, "START").as_numpy()
            ready = pb_utils.get_input_tensor_by_name(request, "READY").as_numpy()
            corrid = request.correlation_id()
            if not ready.reshape(-1)[0]:  # a null row of a direct batch: its answer is dropped
                output = pb_utils.Tensor("OUTPUT", value)
                responses.append(pb_utils.InferenceResponse(output_tensors=[output]))
                continue
            previous = 0 if start.reshape(-1)[0] else self.sums.get(corrid, 0)
            output = value.astype(np.int32) + previous  # int32 arrays wrap around, as C would
            self.sums[corrid] = output
            if request.flags() & 2:  # TRITONSERVER_REQUEST_FLAG_SEQUENCE_END
                self.sums.pop(corrid, None)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT", output)]))
        return responses
"""


def write_sequence_accumulator(repo: Path, name: str = SEQUENCE) -> Path:
    """P7: python accumulator, INT32[1], `max_batch_size 8`, `sequence_batching { direct {} }` with
    START/READY control inputs and the correlation id; the same files for both servers."""
    config = build_config(
        name,
        backend="python",
        inputs=[("INPUT", model_config_pb2.DataType.Value("TYPE_INT32"), [1])],
        outputs=[("OUTPUT", model_config_pb2.DataType.Value("TYPE_INT32"), [1])],
        max_batch_size=8,
    )
    text_format.Merge(
        """sequence_batching {
             direct { }
             max_sequence_idle_microseconds: 5000000
             control_input [
               { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [0, 1] } ] },
               { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [0, 1] } ] }
             ]
           }""",
        config,
    )
    model_dir = repo / name
    write_config(model_dir, config)
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "1" / "model.py").write_text(SEQUENCE_MODEL)
    return model_dir


def ours_copy(repo: Path, instance_mode: str) -> Path:
    """The repository our server serves: `repo` itself in the default `process` mode, else a copy
    whose models carry TRITONCTL_INSTANCE_MODE (`--ours-instance-mode`); Triton keeps the original."""
    if instance_mode not in INSTANCE_MODES:
        raise ValueError(f"instance mode {instance_mode!r} is not one of {INSTANCE_MODES}")
    if instance_mode == PROCESS:
        return repo
    copy = repo.with_name(f"{repo.name}-ours-{instance_mode}")
    shutil.copytree(repo, copy, dirs_exist_ok=True)
    for config_path in sorted(copy.glob("*/config.pbtxt")):
        config = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
        config.parameters[INSTANCE_MODE_KEY].string_value = instance_mode
        write_config(config_path.parent, config)
    return copy


def write_many_identities(repo: Path, count: int) -> list[str]:
    """`count` small identity models for the start-up scenario (P4)."""
    names = [f"identity_{index:02d}" for index in range(count)]
    for name in names:
        write_identity(repo, name)
    return names


def export_mlp(path: Path) -> None:
    """The MLP 256-1024-1024-10 with torch -> ONNX (`dynamo=False`: one file, no onnxscript), fixed seed."""
    import torch

    torch.manual_seed(0)
    layers: list[torch.nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(MLP_SIZES):
        layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1]).eval()  # no ReLU after the last layer
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        (torch.zeros(1, MLP_SIZES[0]),),
        str(path),
        input_names=["INPUT0"],
        output_names=["OUTPUT0"],
        dynamic_axes={"INPUT0": {0: "batch"}, "OUTPUT0": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )


def write_mlp_repos(ours: Path, triton: Path) -> Path:
    """P2: the same ONNX file for our onnxruntime backend and Triton's python wrapper; returns its path."""
    model_dir = ours / MLP
    onnx_path = model_dir / "1" / "model.onnx"
    export_mlp(onnx_path)
    config = build_config(
        MLP,
        platform="onnxruntime_onnx",
        inputs=[("INPUT0", FP32, [MLP_SIZES[0]])],
        outputs=[("OUTPUT0", FP32, [MLP_SIZES[-1]])],
        max_batch_size=MAX_BATCH_SIZE,
        dynamic_batching=True,
    )
    write_config(model_dir, config)
    shutil.copytree(model_dir, triton / MLP)
    onnx_python_wrapper(triton / MLP)
    return onnx_path


_MLSERVER_RUNTIME = '''\
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class IdentityRuntime(MLModel):
    """OUTPUT0 = INPUT0, through MLServer's numpy codec like a real runtime."""

    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        data = NumpyCodec.decode_input(payload.inputs[0])
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("OUTPUT0", data)])
'''


def write_mlserver_identity(folder: Path) -> None:
    """MLServer's layout: `<folder>/identity/model-settings.json`; the runtime module sits in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "identity_runtime.py").write_text(_MLSERVER_RUNTIME)
    tensor = {"datatype": "FP32", "shape": [-1, *P1_DIMS]}
    settings = {
        "name": IDENTITY,
        "implementation": "identity_runtime.IdentityRuntime",
        "inputs": [{"name": "INPUT0", **tensor}],
        "outputs": [{"name": "OUTPUT0", **tensor}],
    }
    model_dir = folder / IDENTITY
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "model-settings.json").write_text(json.dumps(settings, indent=2))
