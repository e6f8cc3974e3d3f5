"""`make gpu-check` (benchmarks/gpu_check.py) must pass on a machine without a GPU, saying so."""

from __future__ import annotations

import pytest

from benchmarks import gpu_check


def test_without_a_gpu_it_says_so_and_exits_0(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(gpu_check, "gpu_count", lambda: (0, "NVML sees 0 devices"))
    assert gpu_check.main([]) == 0
    out = capsys.readouterr().out
    assert "no GPU on this machine" in out
    assert "SKIP  cuda_shm  " in out  # and why CUDA shared memory could not be checked either


def test_the_group_rewrite_places_one_kind_gpu_group_per_entry(tmp_path: pytest.TempPathFactory) -> None:
    from pathlib import Path

    config = Path(str(tmp_path)) / "config.pbtxt"
    config.write_text('name: "m"\ninstance_group {\n  count: 2\n  kind: KIND_CPU\n}\n')
    gpu_check.gpu_group(config, [[0], [1]])
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    parsed = text_format.Parse(config.read_text(), model_config_pb2.ModelConfig())
    assert [(g.count, g.kind, list(g.gpus)) for g in parsed.instance_group] == [
        (1, model_config_pb2.ModelInstanceGroup.KIND_GPU, [0]),
        (1, model_config_pb2.ModelInstanceGroup.KIND_GPU, [1]),
    ]


METRICS = """\
# TYPE tritonctl_model_memory_bytes gauge
tritonctl_model_memory_bytes{device="cpu",model="onnx_cuda",version="1"} 1048576.0
tritonctl_model_memory_bytes{device="gpu0",model="onnx_cuda",version="1"} 314572800.0
tritonctl_model_memory_bytes{device="gpu1",model="placed_auto",version="1"} 2000.0
tritonctl_model_memory_used_bytes{device="gpu0"} 314572800.0
"""


def test_the_placement_and_accounting_checks_read_the_metrics(tmp_path: pytest.TempPathFactory) -> None:
    from pathlib import Path

    repo = Path(str(tmp_path))
    (repo / "onnx_cuda" / "1").mkdir(parents=True)
    (repo / "onnx_cuda" / "1" / "model.onnx").write_bytes(b"\0" * 100)
    memory = gpu_check.memory_samples(METRICS, "tritonctl_model_memory_bytes")
    assert ({"device": "gpu1", "model": "placed_auto", "version": "1"}, 2000.0) in memory
    assert "placed on gpu1" in gpu_check.placed_on_one_gpu(memory)
    used = gpu_check.memory_samples(METRICS, "tritonctl_model_memory_used_bytes")
    stats = [{"name": "onnx_cuda", "memory_usage": [{"type": "GPU", "id": 0, "byte_size": 314572800}]}]
    assert "onnx_cuda gpu0 300.0 MiB (NVML delta)" in gpu_check.per_device(repo, memory, used, stats)
    with pytest.raises(AssertionError, match="expected exactly one GPU"):
        gpu_check.placed_on_one_gpu([])
    wrong = [{"name": "onnx_cuda", "memory_usage": [{"type": "GPU", "id": 0, "byte_size": 5}]}]
    with pytest.raises(AssertionError, match="statistics"):
        gpu_check.per_device(repo, memory, used, wrong)


def test_without_cuda_python_the_cuda_shm_checks_are_skipped_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pytest.TempPathFactory
) -> None:
    from pathlib import Path

    from server.vocabulary import cuda_regions

    repo = Path(str(tmp_path))
    monkeypatch.setattr(cuda_regions, "probe_cuda", lambda: cuda_regions.NOT_INSTALLED)
    skipped: dict[str, str] = {}
    gpu_check.prepare_cuda_shm(repo, skipped)
    assert skipped == {gpu_check.CUDA_SHM: cuda_regions.NOT_INSTALLED}
    assert not (repo / gpu_check.CUDA_SHM).exists()


def test_with_a_cuda_runtime_the_cuda_shm_model_is_written(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pytest.TempPathFactory
) -> None:
    from pathlib import Path

    from server.vocabulary import cuda_regions
    from tests.support.fake_cuda import FakeGpu

    repo = Path(str(tmp_path))
    monkeypatch.setattr(cuda_regions, "probe_cuda", FakeGpu)
    skipped: dict[str, str] = {}
    gpu_check.prepare_cuda_shm(repo, skipped)
    assert skipped == {}
    config = (repo / gpu_check.CUDA_SHM / "config.pbtxt").read_text()
    assert "INPUT1" in config and "OUTPUT1" in config  # add_sub: two in, two out


def test_the_cuda_shm_answer_is_checked_value_by_value() -> None:
    import numpy as np

    a = np.arange(4, dtype=np.float32).reshape(1, 4)
    b = np.full((1, 4), 10, np.float32)
    gpu_check.check_add_sub(np.array([10, 11, 12, 13, -10, -9, -8, -7], np.float32), a, b)
    with pytest.raises(AssertionError, match="expected"):
        gpu_check.check_add_sub(np.array([10, 11, 12, 13, 10, 9, 8, 7], np.float32), a, b)
    with pytest.raises(AssertionError, match="expected"):
        gpu_check.check_add_sub(np.zeros(4, np.float32), a, b)
