"""A python model written the way Triton's python-backend documentation shows runs unchanged.

The model below follows the README's structure and calls (two inputs, two outputs): `initialize`
reads `args["model_config"]` and uses `get_output_config_by_name` + `triton_string_to_numpy`;
`execute` uses `get_input_tensor_by_name`, `Tensor`, `InferenceResponse`; `finalize` prints;
`auto_complete_config` uses `as_dict`, `add_input`, `add_output`, `set_max_batch_size`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc.model_config_pb2 import ModelConfig

from server.core.placement import place_instances
from server.errors import LoadError
from server.workers.backend_loading import InstanceLaunch
from server.workers.settings import WorkerOptions
from server.workers.supervisor import start_worker
from tests.integration.workers.pool import Workers, output, request
from tests.support.models import write_python_source

pytestmark = pytest.mark.integration

DOCS_STYLE_MODEL = """
import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        inputs = [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [4]},
                  {"name": "INPUT1", "data_type": "TYPE_FP32", "dims": [4]}]
        outputs = [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [4]},
                   {"name": "OUTPUT1", "data_type": "TYPE_FP32", "dims": [4]}]
        config = auto_complete_model_config.as_dict()
        input_names = [entry["name"] for entry in config["input"]]
        output_names = [entry["name"] for entry in config["output"]]
        for entry in inputs:
            if entry["name"] not in input_names:
                auto_complete_model_config.add_input(entry)
        for entry in outputs:
            if entry["name"] not in output_names:
                auto_complete_model_config.add_output(entry)
        auto_complete_model_config.set_max_batch_size(0)
        return auto_complete_model_config

    def initialize(self, args):
        self.args = args
        self.model_config = model_config = json.loads(args["model_config"])
        output0_config = pb_utils.get_output_config_by_name(model_config, "OUTPUT0")
        output1_config = pb_utils.get_output_config_by_name(model_config, "OUTPUT1")
        self.output0_dtype = pb_utils.triton_string_to_numpy(output0_config["data_type"])
        self.output1_dtype = pb_utils.triton_string_to_numpy(output1_config["data_type"])
        print("Initialized...")

    def execute(self, requests):
        output0_dtype = self.output0_dtype
        output1_dtype = self.output1_dtype
        responses = []
        for request in requests:
            in_0 = pb_utils.get_input_tensor_by_name(request, "INPUT0")
            in_1 = pb_utils.get_input_tensor_by_name(request, "INPUT1")
            out_0, out_1 = (in_0.as_numpy() + in_1.as_numpy(), in_0.as_numpy() - in_1.as_numpy())
            out_tensor_0 = pb_utils.Tensor("OUTPUT0", out_0.astype(output0_dtype))
            out_tensor_1 = pb_utils.Tensor("OUTPUT1", out_1.astype(output1_dtype))
            # Echo what initialize() was given, so the test can check Triton's args keys.
            args = pb_utils.Tensor("ARGS", np.array([json.dumps(self.args).encode()], dtype=np.object_))
            inference_response = pb_utils.InferenceResponse(output_tensors=[out_tensor_0, out_tensor_1, args])
            responses.append(inference_response)
        return responses

    def finalize(self):
        print("Cleaning up...")
"""


def test_docs_style_python_model_runs_unchanged(workers: Workers) -> None:
    model_dir = workers.root / "add_sub"
    model_dir.mkdir()
    (model_dir / "config.pbtxt").write_text('name: "add_sub"\nbackend: "python"\n')
    write_python_source(model_dir, DOCS_STYLE_MODEL)
    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), ModelConfig())
    spec = place_instances(config, [])[0]
    channel = workers.run(
        start_worker(InstanceLaunch("add_sub", 1, model_dir, config, spec), WorkerOptions())
    )
    workers.channels.append(channel)

    completed = channel.completed_config
    assert completed is not None
    assert [i.name for i in completed.input] == ["INPUT0", "INPUT1"]
    assert [o.name for o in completed.output] == ["OUTPUT0", "OUTPUT1"]
    assert list(completed.input[0].dims) == [4] and completed.max_batch_size == 0

    in0, in1 = np.array([1, 2, 3, 4], np.float32), np.array([0.5, 0.5, 1, 8], np.float32)
    result = workers.run(channel.submit([request("add_sub", INPUT0=in0, INPUT1=in1)])).results[0]
    np.testing.assert_array_equal(output(result, "OUTPUT0"), in0 + in1)
    np.testing.assert_array_equal(output(result, "OUTPUT1"), in0 - in1)

    args = json.loads(output(result, "ARGS")[0])
    assert args == {
        "model_config": args["model_config"],
        "model_instance_kind": "CPU",
        "model_instance_name": "add_sub_0_0",
        "model_instance_device_id": "0",
        "model_repository": str(model_dir),
        "model_version": "1",
        "model_name": "add_sub",
    }
    given_config = json.loads(args["model_config"])  # the auto-completed config, in Triton's JSON shape
    assert given_config["name"] == "add_sub"
    assert [entry["name"] for entry in given_config["output"]] == ["OUTPUT0", "OUTPUT1"]


def test_auto_complete_config_is_not_called_when_the_server_says_so(workers: Workers) -> None:
    # --disable-auto-complete-config / --strict-model-config: the model gets its config as written.
    model_dir = workers.root / "strict_add_sub"
    model_dir.mkdir()
    (model_dir / "config.pbtxt").write_text('name: "strict_add_sub"\nbackend: "python"\n')
    write_python_source(model_dir, DOCS_STYLE_MODEL)
    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), ModelConfig())
    spec = place_instances(config, [])[0]
    options = WorkerOptions(auto_complete_config=False)
    with pytest.raises(LoadError, match="'NoneType' object is not subscriptable"):
        # initialize() looks up OUTPUT0's config, which only auto_complete_config would have added
        workers.run(start_worker(InstanceLaunch("strict_add_sub", 1, model_dir, config, spec), options))
