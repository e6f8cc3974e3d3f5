"""Small builders shared by the scheduler unit tests."""

from __future__ import annotations

from typing import Any

from tritonclient.grpc import model_config_pb2 as mc

from server.vocabulary.types import InferenceRequest, Tensor


def model_config(
    *,
    max_batch_size: int = 8,
    dims: tuple[int, ...] = (4,),
    ragged: bool = False,
    optional_input: bool = False,
    shape_tensor: bool = False,
    **batching: Any,
) -> mc.ModelConfig:
    """A config with INPUT0 (and optional INPUT1) and a dynamic_batching block built from kwargs."""
    config = mc.ModelConfig(name="m", max_batch_size=max_batch_size)
    config.input.add(name="INPUT0", data_type=mc.TYPE_FP32, dims=list(dims), allow_ragged_batch=ragged)
    if optional_input or shape_tensor:
        config.input.add(
            name="INPUT1",
            data_type=mc.TYPE_INT32,
            dims=[1],
            optional=optional_input,
            is_shape_tensor=shape_tensor,
        )
    config.output.add(name="OUTPUT0", data_type=mc.TYPE_FP32, dims=list(dims))
    config.dynamic_batching.SetInParent()
    policies = batching.pop("priority_queue_policy", {})
    default_policy = batching.pop("default_queue_policy", None)
    for key, value in batching.items():
        if key == "preferred_batch_size":
            config.dynamic_batching.preferred_batch_size.extend(value)
        else:
            setattr(config.dynamic_batching, key, value)
    if default_policy is not None:
        config.dynamic_batching.default_queue_policy.CopyFrom(mc.ModelQueuePolicy(**default_policy))
    for level, policy in policies.items():
        config.dynamic_batching.priority_queue_policy[level].CopyFrom(mc.ModelQueuePolicy(**policy))
    return config


def request(
    rows: int = 1,
    *,
    width: int = 4,
    tag: int = 0,
    extra: InferenceRequest | None = None,
    shape_value: int | None = None,
    **parameters: Any,
) -> InferenceRequest:
    """A request of `rows` x `width` FP32 whose every element equals `tag` (so answers are checkable)."""
    import numpy as np

    data = np.full((rows, width), tag, dtype=np.float32).tobytes()
    inputs = [Tensor("INPUT0", "FP32", [rows, width], data)]
    if shape_value is not None:
        inputs.append(
            Tensor("INPUT1", "INT32", [rows, 1], np.full((rows, 1), shape_value, np.int32).tobytes())
        )
    return InferenceRequest(model="m", version="1", inputs=inputs, id=str(tag), parameters=dict(parameters))
