"""Which refused or failed requests count in `inference_stats.fail` (and nv_inference_request_failure).

Pinned to what the real Triton 2.51 did on the same python model and the same requests, over HTTP
and gRPC, with and without dynamic batching (measured 2026-12, the pytriton-bundled tritonserver):
- refused before the scheduler: unknown / extra / missing input, wrong dtype, wrong shape, batch over
  max_batch_size, unknown requested output, bad binary size, unknown version: no counter moves;
- execute() raises: fail +1 (reason BACKEND), execution_count +1, inference_count +0;
- execute() returns InferenceResponse(error=...): a *success* (success, execution and inference +1),
  although the client gets the error;
- queue full: nothing counted; queue timeout (REJECT): fail +1 reason REJECTED (scheduler unit tests).
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.support.server import RunningServer, start_server

MODEL_PY = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        marker = float(pb_utils.get_input_tensor_by_name(requests[0], "INPUT0").as_numpy().flat[0])
        if marker == -1.0:
            raise RuntimeError("execute raised on purpose")
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            if float(data.flat[0]) == -2.0:
                error = pb_utils.TritonError("error response on purpose")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
            else:
                output = pb_utils.Tensor("OUTPUT0", data)
                responses.append(pb_utils.InferenceResponse(output_tensors=[output]))
        return responses
"""
CONFIG = """name: "{name}"
backend: "python"
max_batch_size: 2
input [ {{ name: "INPUT0", data_type: TYPE_FP32, dims: [ 4 ] }} ]
output [ {{ name: "OUTPUT0", data_type: TYPE_FP32, dims: [ 4 ] }} ]
instance_group [ {{ kind: KIND_CPU, count: 1 }} ]
{extra}
"""
MODELS = {"plain": "", "batched": "dynamic_batching { }"}

# kind -> (success, fail, execution_count, inference_count) deltas, as Triton 2.51 counted them.
REFUSED = (0, 0, 0, 0)
EXPECTED: dict[str, tuple[int, int, int, int]] = {
    "ok": (1, 0, 1, 1),
    "unknown_input": REFUSED,
    "extra_input": REFUSED,
    "missing_input": REFUSED,
    "wrong_dtype": REFUSED,
    "wrong_shape": REFUSED,
    "batch_over_max": REFUSED,
    "unknown_output": REFUSED,
    "unknown_version": REFUSED,
    "execute_raises": (0, 1, 1, 0),
    "error_response": (1, 0, 1, 1),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo: Path = tmp_path_factory.mktemp("repo")
    for name, extra in MODELS.items():
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(CONFIG.format(name=name, extra=extra))
        (repo / name / "1" / "model.py").write_text(MODEL_PY)
    with start_server(repo) as running:
        yield running


def _data(first: float = 1.0, shape: tuple[int, ...] = (1, 4), dtype: Any = np.float32) -> Any:
    data = np.ones(shape, dtype)
    data.flat[0] = first
    return data


def _sender(kind: str, client: Any, module: Any) -> Callable[[str], object]:
    def tensor(name: str = "INPUT0", data: Any = None, datatype: str = "FP32") -> Any:
        data = _data() if data is None else data
        result = module.InferInput(name, list(data.shape), datatype)
        result.set_data_from_numpy(data)
        return result

    sends: dict[str, Callable[[str], object]] = {
        "ok": lambda m: client.infer(m, [tensor()]),
        "unknown_input": lambda m: client.infer(m, [tensor("NOPE")]),
        "extra_input": lambda m: client.infer(m, [tensor(), tensor("EXTRA")]),
        "missing_input": lambda m: client.infer(m, []),
        "wrong_dtype": lambda m: client.infer(m, [tensor(data=_data(dtype=np.int32), datatype="INT32")]),
        "wrong_shape": lambda m: client.infer(m, [tensor(data=_data(shape=(1, 5)))]),
        "batch_over_max": lambda m: client.infer(m, [tensor(data=_data(shape=(3, 4)))]),
        "unknown_output": lambda m: client.infer(
            m, [tensor()], outputs=[module.InferRequestedOutput("NOPE")]
        ),
        "unknown_version": lambda m: client.infer(m, [tensor()], model_version="7"),
        "execute_raises": lambda m: client.infer(m, [tensor(data=_data(-1.0))]),
        "error_response": lambda m: client.infer(m, [tensor(data=_data(-2.0))]),
    }
    return sends[kind]


def _counts(server: RunningServer, model: str) -> tuple[int, int, int, int, float]:
    stats = httpclient.InferenceServerClient(server.http_url).get_inference_statistics(model, "1")
    entry = stats["model_stats"][0]
    inference = entry["inference_stats"]
    with urllib.request.urlopen(f"http://{server.metrics_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    failures = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("nv_inference_request_failure{") and f'model="{model}"' in line
    )
    return (
        int(inference["success"]["count"]),
        int(inference["fail"]["count"]),
        int(entry["execution_count"]),
        int(entry["inference_count"]),
        failures,
    )


def _delta(server: RunningServer, model: str, send: Callable[[], object]) -> tuple[int, ...]:
    before = _counts(server, model)
    with contextlib.suppress(InferenceServerException):  # only the counters matter here
        send()
    after = _counts(server, model)
    return tuple(int(a - b) for a, b in zip(after, before, strict=True))


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("kind", list(EXPECTED))
def test_fail_counts_what_triton_counts(server: RunningServer, model: str, protocol: str, kind: str) -> None:
    module: Any = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(server.http_url if protocol == "http" else server.grpc_url)
    delta = _delta(server, model, lambda: _sender(kind, client, module)(model))
    success, fail, executions, inferences = EXPECTED[kind]
    # The failure metric moves with inference_stats.fail.
    assert delta == (success, fail, executions, inferences, fail)


@pytest.mark.parametrize("model", list(MODELS))
def test_bad_binary_size_counts_nowhere(server: RunningServer, model: str) -> None:
    header = {"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 12}}
    body = json.dumps({"inputs": [header]}).encode()
    request = urllib.request.Request(
        f"http://{server.http_url}/v2/models/{model}/infer",
        data=body + b"\0" * 12,
        headers={"Inference-Header-Content-Length": str(len(body))},
    )

    def send() -> None:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        refused.value.close()
        assert refused.value.code == 400

    assert _delta(server, model, send) == (0, 0, 0, 0, 0)
