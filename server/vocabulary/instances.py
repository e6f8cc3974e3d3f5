"""One model instance as every floor names it: placed by core/placement.py, started by workers/."""

from __future__ import annotations

from dataclasses import dataclass

KIND_CPU = "KIND_CPU"
KIND_GPU = "KIND_GPU"
KIND_MODEL = "KIND_MODEL"


@dataclass(frozen=True)
class InstanceSpec:
    """One model instance = one worker process."""

    name: str  # "<model>_<group>_<index>" (or "<group name>_<index>" when the group is named)
    kind: str  # KIND_CPU | KIND_GPU | KIND_MODEL
    device_id: int | None  # GPU ordinal for KIND_GPU (becomes CUDA_VISIBLE_DEVICES), else None
    group_index: int
    index: int  # position inside its group

    @property
    def cuda_visible_devices(self) -> str | None:
        """Value for the worker's CUDA_VISIBLE_DEVICES: its GPU, "" for CPU, None = inherit (KIND_MODEL)."""
        if self.kind == KIND_GPU:
            return str(self.device_id)
        if self.kind == KIND_CPU:
            return ""
        return None
