"""Instance placement: (model config, visible GPUs) -> one InstanceSpec per worker process.

A pure function so it is tested with any device list and no GPU. The rules follow Triton's
instance_group semantics (docs/user_guide/model_configuration.md, "Instance Groups"):

- no instance_group: one instance per visible GPU, or one CPU instance when none is visible;
- KIND_CPU: `count` instances (naming GPUs there is an error);
- KIND_GPU: `count` instances on *each* GPU of `gpus` (all visible GPUs when empty); no visible GPU,
  or a listed GPU that is not visible, is a LoadError that names it;
- KIND_AUTO: behaves as KIND_GPU when a GPU is visible, else falls back to KIND_CPU;
- KIND_MODEL: `count` instances; the model picks its devices itself (all visible GPUs stay visible).

Where a KIND_GPU group lists no `gpus`, the lifecycle manager may narrow "every visible GPU" to
the devices with room (server/core/registry/gpu_placement.py); explicit `gpus` are never moved.

Triton names instances `<group name>_<c>` and reuses the name across the GPUs of a group; our worker
processes need unique names, so the index runs over count x gpus: `<model>_<group>_<index>`.
"""

from __future__ import annotations

from tritonclient.grpc.model_config_pb2 import ModelConfig, ModelInstanceGroup

from server.errors import LoadError
from server.vocabulary.instances import KIND_CPU, KIND_GPU, KIND_MODEL, InstanceSpec


def place_instances(config: ModelConfig, visible_gpus: list[int]) -> list[InstanceSpec]:
    """Expand the config's instance groups into instance specs over the visible GPUs.

    Raises LoadError when a group cannot be placed (GPU kind without a GPU, an invisible GPU id,
    GPUs on a CPU group, a negative count).
    """
    groups = list(config.instance_group)
    if not groups:
        groups = [ModelInstanceGroup(kind=ModelInstanceGroup.KIND_AUTO, count=1)]
    specs: list[InstanceSpec] = []
    for group_index, group in enumerate(groups):
        specs.extend(_place_group(config.name, group_index, group, visible_gpus))
    return specs


def _place_group(
    model: str, group_index: int, group: ModelInstanceGroup, visible_gpus: list[int]
) -> list[InstanceSpec]:
    group_name = group.name or f"{model}_{group_index}"
    where = f"instance group '{group_name}' of model '{model}'"
    if group.count < 0:
        raise LoadError(f"{where} has count {group.count}; count must be at least 1")
    count = group.count or 1  # 0 means unset in proto3; Triton's default is 1
    kind = ModelInstanceGroup.Kind.Name(group.kind)
    listed_gpus = list(group.gpus)

    if kind == "KIND_AUTO":
        kind = KIND_GPU if visible_gpus else KIND_CPU
        if kind == KIND_CPU:
            listed_gpus = []  # the fallback ignores GPU ids, as Triton does without GPUs

    if kind == KIND_CPU:
        if listed_gpus:
            raise LoadError(f"{where} has kind KIND_CPU but lists GPUs {listed_gpus}; remove 'gpus'")
        return [InstanceSpec(f"{group_name}_{i}", KIND_CPU, None, group_index, i) for i in range(count)]

    if kind == KIND_MODEL:
        return [InstanceSpec(f"{group_name}_{i}", KIND_MODEL, None, group_index, i) for i in range(count)]

    # KIND_GPU
    if not visible_gpus:
        raise LoadError(
            f"{where} has kind KIND_GPU but no GPU is visible (none found, or hidden by --gpus); "
            "use KIND_CPU or KIND_AUTO to run on CPU"
        )
    invisible = [gpu for gpu in listed_gpus if gpu not in visible_gpus]
    if invisible:
        raise LoadError(
            f"{where} asks for GPU {', '.join(map(str, invisible))}, which is not visible; "
            f"visible GPUs: {', '.join(map(str, visible_gpus))}"
        )
    return gpu_group_specs(group_name, group_index, count, listed_gpus or list(visible_gpus))


def gpu_group_specs(group_name: str, group_index: int, count: int, gpus: list[int]) -> list[InstanceSpec]:
    """`count` KIND_GPU instances on each of `gpus` (Triton's rule), named `<group>_<index>`."""
    specs: list[InstanceSpec] = []
    for _ in range(count):
        for gpu in gpus:
            index = len(specs)
            specs.append(InstanceSpec(f"{group_name}_{index}", KIND_GPU, gpu, group_index, index))
    return specs
