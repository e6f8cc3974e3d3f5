"""The response cache in a model config: what Triton refuses, and what the cache would ignore."""

from __future__ import annotations

from typing import Any

from server.repository.findings import Findings


def check_response_cache(config: Any, found: Findings) -> None:
    """E347: Triton refuses `response_cache { enable: true }` on a decoupled model (several answers
    per request cannot be cached); W348: a sequence-batched model's answers are never cached."""
    if not config.response_cache.enable:
        return
    if config.model_transaction_policy.decoupled:
        found.error(
            "E347-response-cache-decoupled",
            "response_cache.enable",
            "the response cache does not support models with the decoupled transaction policy",
            "remove response_cache, or set model_transaction_policy { decoupled: false }",
        )
    elif config.HasField("sequence_batching"):
        found.warning(
            "W348-response-cache-sequence",
            "response_cache.enable",
            "answers of a sequence-batched model depend on its sequence state: the cache never holds them",
            "remove response_cache (it has no effect here)",
        )
