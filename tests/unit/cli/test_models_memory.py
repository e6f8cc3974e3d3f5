"""`tritonctl models list`'s memory column: statistics memory_usage per device (CPU and each GPU)."""

from __future__ import annotations

from typing import Any

from tritonctl.cli.models import _memory_by_version, memory_cell


class Statistics:
    def model_statistics(self, name: str, version: str) -> list[dict[str, Any]]:
        return [
            {
                "name": "onnx_gpu",
                "version": "1",
                "memory_usage": [
                    {"type": "CPU", "id": 0, "byte_size": 2 << 20},
                    {"type": "GPU", "id": "1", "byte_size": "314572800"},  # gRPC JSON: uint64 as text
                ],
            },
            {"name": "cpu_only", "version": "2", "memory_usage": [{"type": "CPU", "byte_size": 1 << 20}]},
            {"name": "unmeasured", "version": "1"},
        ]


def test_memory_is_reported_per_device() -> None:
    found = _memory_by_version(Statistics())
    assert found == {
        ("onnx_gpu", "1"): {"cpu": 2 << 20, "gpu1": 300 << 20},
        ("cpu_only", "2"): {"cpu": 1 << 20},
    }
    assert memory_cell(found[("onnx_gpu", "1")]) == "2.0 MiB + gpu1 300.0 MiB"
    assert memory_cell(found[("cpu_only", "2")]) == "1.0 MiB"
    assert memory_cell(None) == "-"
