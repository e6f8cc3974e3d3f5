"""`make gpu-check` (benchmarks/gpu_check.py) must pass on a machine without a GPU, saying so."""

from __future__ import annotations

import pytest

from benchmarks import gpu_check


def test_without_a_gpu_it_says_so_and_exits_0(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(gpu_check, "gpu_count", lambda: (0, "NVML sees 0 devices"))
    assert gpu_check.main([]) == 0
    assert "no GPU on this machine" in capsys.readouterr().out


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
