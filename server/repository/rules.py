"""The semantic rules of one model config: what `tritonctl validate` prints and what the server
refuses to load with. Each finding has a stable code, says what is wrong and how to fix it, and
points at the line of the field (see `locations.py`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server.repository.cache_rules import check_response_cache
from server.repository.diagnostics import Diagnostic
from server.repository.files import check_layout
from server.repository.findings import Findings, default_source
from server.repository.instance_mode import (
    HOST,
    INSTANCE_MODE_EXAMPLE,
    INSTANCE_MODE_KEY,
    PROCESS,
    configured_instance_mode,
    gpu_kind_problem,
    unknown_mode_problem,
)
from server.repository.labels import check_label_files
from server.repository.layout import (
    BACKEND_PLATFORMS,
    KNOWN_BACKENDS,
    PLATFORM_ALIASES,
    PLATFORM_BACKENDS,
    backend_of,
    resolve_versions,
)
from server.repository.loader import normalize_identity
from server.repository.schema import ConfigSource
from server.repository.sequence_rules import check_sequence_config
from server.repository.version_weights import VERSION_WEIGHTS_EXAMPLE, version_weights_problem

_TENSOR_KINDS = (("input", "input"), ("output", "output"))


def _check_identity(config: Any, name: str, found: Findings) -> None:
    if config.name and config.name != name:
        found.error(
            "E204-name-mismatch",
            "name",
            f'config name "{config.name}" does not match the model folder "{name}"',
            f'set name: "{name}" (or leave name out) or rename the folder to "{config.name}"',
        )
    if config.platform in PLATFORM_ALIASES:
        found.warning(
            "W301-pytorch-alias",
            "platform",
            f'platform "{config.platform}" is accepted as "{PLATFORM_ALIASES[config.platform]}" '
            "(Triton itself rejects it)",
            f'write platform: "{PLATFORM_ALIASES[config.platform]}" or backend: "pytorch"',
        )
    platform = PLATFORM_ALIASES.get(config.platform, config.platform)
    if platform and platform not in PLATFORM_BACKENDS:
        found.error(
            "E302-unknown-platform",
            "platform",
            f'unknown platform "{config.platform}"',
            f"use one of: {', '.join(PLATFORM_BACKENDS)}; or set backend (python, onnxruntime, ...)",
        )
    if config.backend and config.backend not in KNOWN_BACKENDS:
        found.warning(
            "W303-unsupported-backend",
            "backend",
            f'backend "{config.backend}" is not one this server runs',
            f"use one of: {', '.join(KNOWN_BACKENDS)}",
        )
    implied = PLATFORM_BACKENDS.get(platform)
    if implied and config.backend and config.backend != implied:
        found.error(
            "E304-platform-backend-conflict",
            "backend",
            f'backend "{config.backend}" contradicts platform "{config.platform}" (which means "{implied}")',
            f'remove one of them, or set backend: "{implied}"',
        )
    if config.backend == "ensemble" or (config.backend in BACKEND_PLATFORMS and platform == "ensemble"):
        found.error(
            "E304-platform-backend-conflict",
            "backend",
            'ensembles are written as platform: "ensemble" without a backend',
            'set platform: "ensemble" and remove backend',
        )


def _check_dims(found: Findings, path: str, tensor: Any, max_batch_size: int) -> None:
    dims = list(tensor.dims)
    if not dims and not (tensor.HasField("reshape") and not tensor.reshape.shape):
        found.error(
            "E313-empty-dims",
            path,
            f'tensor "{tensor.name}" has no dims',
            "list its shape without the batch axis, e.g. dims: [ 3, 224, 224 ] (use -1 for a variable axis)",
        )
    for index, dim in enumerate(dims):
        if dim < -1 or dim == 0:
            found.error(
                "E314-bad-dim",
                f"{path}.dims[{index}]",
                f'tensor "{tensor.name}" has dimension {dim}; dimensions are >= 1, or -1 for a variable size',
                "use a positive size or -1",
            )
    if tensor.HasField("reshape") and -1 not in dims and -1 not in tensor.reshape.shape:
        size, reshaped = 1, 1
        for dim in dims:
            size *= dim
        for dim in tensor.reshape.shape:
            reshaped *= dim
        if size != reshaped:
            found.error(
                "E319-reshape-size",
                f"{path}.reshape",
                f'tensor "{tensor.name}" reshape {list(tensor.reshape.shape)} has {reshaped} elements but '
                f"dims {dims} have {size}",
                "make reshape.shape hold as many elements as dims",
            )


def _check_tensors(config: Any, found: Findings) -> None:
    backend = backend_of(config)
    missing = [kind for field, kind in _TENSOR_KINDS if not getattr(config, field)]
    if missing and backend == "ensemble":
        found.error(
            "E311-missing-tensors",
            "name",
            f"an ensemble must list its {' and '.join(missing)}s",
            "add input [ { name: ..., data_type: ..., dims: [...] } ] and the matching output [ ... ]",
        )
    elif missing and backend == "pytorch":
        # The seed's own example omits them; Triton's PyTorch backend cannot auto-complete them,
        # so the model loads only if the server can take them from the TorchScript signature.
        found.warning(
            "W311-missing-tensors",
            "name",
            f"a pytorch model should list its {' and '.join(missing)}s: TorchScript files carry no types "
            "or shapes to auto-complete them from",
            "add input [ { name: ..., data_type: ..., dims: [...] } ] and output [ ... ], or run "
            "`tritonctl config generate MODEL_DIR --input NAME:DTYPE:DIMS`",
        )
    for field, kind in _TENSOR_KINDS:
        tensors = getattr(config, field)
        seen: dict[str, int] = {}
        for index, tensor in enumerate(tensors):
            path = f"{field}[{index}]"
            if not tensor.name:
                found.error("E317-missing-tensor-name", path, f"{kind} #{index + 1} has no name", "add name")
            elif tensor.name in seen:
                found.error(
                    "E316-duplicate-tensor-name",
                    f"{path}.name",
                    f'{kind} name "{tensor.name}" is used twice ({kind} #{seen[tensor.name] + 1} and '
                    f"#{index + 1})",
                    f"give each {kind} a unique name",
                )
            seen.setdefault(tensor.name, index)
            if tensor.data_type == 0:
                found.error(
                    "E318-missing-data-type",
                    path,
                    f'{kind} "{tensor.name}" has no data_type',
                    "add data_type, e.g. data_type: TYPE_FP32",
                )
            _check_dims(found, path, tensor, config.max_batch_size)
    if config.max_batch_size > 0 and config.input and config.output:
        tensors = [*config.input, *config.output]
        if all(list(t.dims)[:1] == [-1] and len(t.dims) >= 2 for t in tensors):
            found.warning(
                "W315-batch-dim-in-dims",
                "input[0].dims[0]",
                "every tensor's dims start with -1 although max_batch_size > 0: if -1 is the batch axis, "
                "it is listed twice (Triton adds it in front of dims)",
                "drop the leading -1 from each dims, or set max_batch_size: 0",
            )


def _check_batching(config: Any, found: Findings) -> None:
    if config.max_batch_size < 0:
        found.error(
            "E310-negative-max-batch-size",
            "max_batch_size",
            f"max_batch_size is {config.max_batch_size}",
            "use 0 (no batching) or a positive batch size",
        )
    if not config.HasField("dynamic_batching"):
        return
    batching = config.dynamic_batching
    if config.max_batch_size == 0:
        found.error(
            "E320-batching-without-batch-size",
            "dynamic_batching",
            "dynamic_batching is enabled but max_batch_size is 0, so requests cannot be batched",
            "set max_batch_size to a positive value, or remove dynamic_batching",
        )
    for index, size in enumerate(batching.preferred_batch_size):
        if size <= 0 or (config.max_batch_size > 0 and size > config.max_batch_size):
            found.error(
                "E321-preferred-batch-size",
                f"dynamic_batching.preferred_batch_size[{index}]",
                f"preferred_batch_size {size} is outside 1..max_batch_size ({config.max_batch_size})",
                f"use sizes between 1 and {max(config.max_batch_size, 1)}, or raise max_batch_size",
            )
    if batching.priority_levels and batching.default_priority_level > batching.priority_levels:
        found.error(
            "E322-bad-priority-level",
            "dynamic_batching.default_priority_level",
            f"default_priority_level {batching.default_priority_level} is above priority_levels "
            f"{batching.priority_levels}",
            f"use a level between 1 and {batching.priority_levels}",
        )


def _check_instances(config: Any, found: Findings) -> None:
    names: set[str] = set()
    for index, group in enumerate(config.instance_group):
        path = f"instance_group[{index}]"
        kind = type(group).Kind.Name(group.kind)
        if group.count < 0:
            found.error(
                "E332-bad-instance-count", f"{path}.count", f"instance count {group.count}", "use count >= 1"
            )
        for gpu_index, gpu in enumerate(group.gpus):
            if gpu < 0:
                found.error(
                    "E330-negative-gpu",
                    f"{path}.gpus[{gpu_index}]",
                    f"GPU id {gpu} is negative",
                    "use GPU ordinals 0, 1, ... as listed by nvidia-smi",
                )
        if group.gpus and kind in ("KIND_CPU", "KIND_MODEL"):
            found.error(
                "E331-gpus-on-cpu-group",
                f"{path}.gpus",
                f"instance group #{index + 1} is {kind} but lists gpus {list(group.gpus)}",
                "remove gpus, or set kind: KIND_GPU",
            )
        if group.name:
            if group.name in names:
                found.error(
                    "E334-duplicate-group-name",
                    f"{path}.name",
                    f'instance group name "{group.name}" is used twice',
                    "give each instance group a unique name",
                )
            names.add(group.name)


def _check_version_policy(config: Any, found: Findings, versions: list[int] | None) -> None:
    policy = config.version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "latest" and policy.latest.num_versions < 1:
        found.error(
            "E341-bad-latest-policy",
            "version_policy.latest",
            "version_policy latest needs num_versions >= 1",
            "write version_policy: { latest: { num_versions: 1 } }",
        )
    if choice == "specific":
        if not policy.specific.versions:
            found.error(
                "E342-empty-specific-policy",
                "version_policy.specific",
                "version_policy specific lists no versions",
                "list versions, e.g. specific: { versions: [ 1 ] }",
            )
        for index, version in enumerate(policy.specific.versions):
            if versions is not None and version not in versions:
                found.error(
                    "E340-missing-specific-version",
                    f"version_policy.specific.versions[{index}]",
                    f"version_policy names version {version}, but there is no folder {version}/ "
                    f"(found: {', '.join(map(str, versions)) or 'none'})",
                    f"create {version}/ with the model file, or remove {version} from the policy",
                )


def _check_version_weights(config: Any, found: Findings, versions: list[int] | None) -> None:
    # The weighted routing parameter `tritonctl rollout` sets (server/repository/version_weights.py).
    loaded: list[int] | None = None
    if versions is not None:
        loaded = resolve_versions(config, versions)
    elif config.version_policy.WhichOneof("policy_choice") == "specific":
        loaded = list(config.version_policy.specific.versions)
    problem = version_weights_problem(config, loaded)
    if problem:
        found.error(
            "E345-bad-version-weights",
            "parameters",
            problem,
            f"write {VERSION_WEIGHTS_EXAMPLE}, naming only versions the version_policy loads",
        )


def _check_instance_mode(config: Any, found: Findings) -> None:
    # tritonctl's own parameter (server/repository/instance_mode.py): in-process instances are CPU only.
    mode = configured_instance_mode(config)
    if mode in (PROCESS, HOST):
        return
    value_path = found.source.locations.map_entry("parameters", INSTANCE_MODE_KEY) + ".value.string_value"
    problem = unknown_mode_problem(mode)
    if problem:
        found.error(
            "E346-bad-instance-mode",
            value_path,
            problem,
            f"write {INSTANCE_MODE_EXAMPLE} (or thread, or process), or remove the parameter",
        )
        return
    for index, group in enumerate(config.instance_group):
        if type(group).Kind.Name(group.kind) == "KIND_GPU":
            found.error(
                "E346-bad-instance-mode",
                f"instance_group[{index}].kind",
                gpu_kind_problem(mode, f"instance group #{index + 1}"),
                f'use kind: KIND_CPU for this group, or set {INSTANCE_MODE_KEY} to "process"',
            )


def _check_scheduling(config: Any, found: Findings) -> None:
    platform = PLATFORM_ALIASES.get(config.platform, config.platform)
    if config.HasField("ensemble_scheduling") and platform != "ensemble":
        found.error(
            "E406-ensemble-scheduling-on-model",
            "ensemble_scheduling",
            'ensemble_scheduling is set but the platform is not "ensemble"',
            'set platform: "ensemble", or remove ensemble_scheduling',
        )
    if platform == "ensemble" and not config.ensemble_scheduling.step:
        found.error(
            "E404-ensemble-without-steps",
            "ensemble_scheduling" if config.HasField("ensemble_scheduling") else "platform",
            "an ensemble needs ensemble_scheduling with at least one step",
            "add ensemble_scheduling { step [ { model_name: ..., input_map ..., output_map ... } ] }",
        )


def check_model_config(
    config: Any,
    model_dir: Path | None = None,
    check_files: bool = True,
    source: ConfigSource | None = None,
    check_contents: bool = True,
) -> list[Diagnostic]:
    """Every semantic (and, with `check_files`, layout) problem of one model's config.

    `source` tells where the config's fields are written (default: the folder's config.pbtxt).
    `check_contents=False` (`validate --no-check-models`) checks model files by name only.
    An empty result or warnings only means the server can load the model.
    """
    name = model_dir.name if model_dir is not None else config.name
    found = Findings(name, source or default_source(model_dir))
    _check_identity(config, name, found)  # on the config as written: alias, name
    written, config = config, type(config)()
    config.CopyFrom(written)
    normalize_identity(config, name, model_dir if check_files else None)
    if backend_of(config) is None and not (model_dir is not None and check_files):
        found.error(
            "E301-missing-backend",
            "",
            "the config names neither platform nor backend",
            'add backend: "python" | "onnxruntime" | "pytorch" | "tensorrt", or platform: "ensemble"',
        )
    _check_tensors(config, found)
    _check_batching(config, found)
    _check_instances(config, found)
    _check_instance_mode(config, found)
    _check_scheduling(config, found)
    check_sequence_config(config, found)
    check_response_cache(config, found)
    versions: list[int] | None = None
    if check_files and model_dir is not None:
        versions = check_layout(config, model_dir, found, check_contents)
        check_label_files(config, model_dir, found)
    _check_version_policy(config, found, versions)
    _check_version_weights(config, found, versions)
    return found.items
