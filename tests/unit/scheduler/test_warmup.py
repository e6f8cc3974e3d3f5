"""model_warmup: requests built from the config and run on every instance."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from server.core.scheduler.warmup import build_warmup_requests, run_warmup
from server.errors import BackendError, LoadError, ServerError
from server.vocabulary.types import InferenceRequest, InferenceResult
from server.workers.channel import BatchOutcome
from tests.support.channels import LiveChannel

CONFIG = """
name: "m"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
        { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
model_warmup [
  {
    name: "zeros" batch_size: 3 count: 2
    inputs { key: "INPUT0" value: { data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } }
    inputs { key: "TEXT" value: { data_type: TYPE_STRING dims: [ 1 ] zero_data: true } }
  },
  {
    name: "from_file"
    inputs { key: "INPUT0" value: { data_type: TYPE_FP32 dims: [ 4 ] input_data_file: "input0" } }
    inputs { key: "TEXT" value: { data_type: TYPE_STRING dims: [ 1 ] random_data: true } }
  }
]
"""


def config(text: str = CONFIG) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


class RecordingChannel(LiveChannel):
    def __init__(self, fail: bool = False) -> None:
        self.instance_name = "m_0"
        self.batches: list[list[InferenceRequest]] = []
        self.fail = fail

    async def submit(self, requests: list[InferenceRequest]) -> BatchOutcome:
        self.batches.append(requests)
        results: list[InferenceResult | ServerError] = [
            BackendError("model exploded") if self.fail else InferenceResult("m", "1", []) for _ in requests
        ]
        return BatchOutcome(results)


def write_input_file(tmp_path: Path) -> Path:
    (tmp_path / "warmup").mkdir()
    (tmp_path / "warmup" / "input0").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    return tmp_path


def test_requests_follow_batch_size_dims_and_data_sources(tmp_path: Path) -> None:
    batches = build_warmup_requests(config(), write_input_file(tmp_path))
    (zeros_name, zeros_count, zeros), (file_name, file_count, from_file) = batches
    assert (zeros_name, zeros_count, len(zeros)) == ("zeros", 2, 3)
    assert (file_name, file_count, len(from_file)) == ("from_file", 1, 1)  # count 0 -> once
    tensors = {t.name: t for t in zeros[0].inputs}
    assert tensors["INPUT0"].shape == [1, 4] and tensors["INPUT0"].datatype == "FP32"
    assert bytes(tensors["INPUT0"].data) == bytes(16)
    assert tensors["TEXT"].datatype == "BYTES" and bytes(tensors["TEXT"].data) == b"\0\0\0\0"
    read = {t.name: t for t in from_file[0].inputs}["INPUT0"]
    assert np.frombuffer(read.data, np.float32).tolist() == [0.0, 1.0, 2.0, 3.0]


def test_models_without_batching_get_no_batch_dimension() -> None:
    unbatched = CONFIG.replace("max_batch_size: 8", "max_batch_size: 0").split("model_warmup", maxsplit=1)[0]
    unbatched += """model_warmup [ {
      name: "random" batch_size: 1
      inputs { key: "INPUT0" value: { data_type: TYPE_FP32 dims: [ 4 ] random_data: true } }
    } ]"""
    [(_, _, requests)] = build_warmup_requests(config(unbatched))
    [tensor] = requests[0].inputs
    assert tensor.shape == [4]
    values = np.frombuffer(tensor.data, np.float32)
    assert ((values >= 0) & (values < 1)).all()


def test_missing_warmup_file_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match=r"from_file.*input0"):
        build_warmup_requests(config(), tmp_path)


def test_every_instance_runs_every_entry_count_times(tmp_path: Path) -> None:
    channels = [RecordingChannel(), RecordingChannel()]
    asyncio.run(run_warmup(config(), list(channels), write_input_file(tmp_path)))
    for channel in channels:
        assert [len(batch) for batch in channel.batches] == [3, 3, 1]


def test_a_failing_warmup_fails_the_load(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="warmup setting 'zeros' failed: model exploded"):
        asyncio.run(run_warmup(config(), [RecordingChannel(fail=True)], write_input_file(tmp_path)))


def test_no_warmup_does_nothing() -> None:
    channel = RecordingChannel()
    asyncio.run(run_warmup(config(CONFIG.split("model_warmup", maxsplit=1)[0]), [channel]))
    assert channel.batches == []
