"""The `version_weights` model parameter: how requests that name no version are split over versions.

    parameters { key: "version_weights" value { string_value: "1:90,2:10" } }

Each item is VERSION:WEIGHT (positive version, non-negative integer weight); a loaded version the
text leaves out gets weight 0 (it still answers requests that name it). The server routes by these
weights (server/core/routing.py); `tritonctl rollout` sets them through config-override loads.
One parser for the server and `tritonctl validate`, so both refuse a bad value with the same words.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

VERSION_WEIGHTS_KEY = "version_weights"
VERSION_WEIGHTS_EXAMPLE = 'parameters { key: "version_weights" value { string_value: "1:90,2:10" } }'


class VersionWeightsError(ValueError):
    """The parameter's text does not say VERSION:WEIGHT,... with sensible numbers."""


def parse_version_weights(text: str) -> dict[int, int]:
    """`"1:90,2:10"` -> {1: 90, 2: 10}; raises VersionWeightsError saying what is wrong."""
    weights: dict[int, int] = {}
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise VersionWeightsError("version_weights is empty: write VERSION:WEIGHT pairs such as 1:90,2:10")
    for item in items:
        version_text, sep, weight_text = item.partition(":")
        if not sep or not version_text.strip().isdigit() or not weight_text.strip().isdigit():
            raise VersionWeightsError(
                f"version_weights item '{item}' must be VERSION:WEIGHT with a version > 0 and "
                "a whole weight >= 0, e.g. 1:90,2:10"
            )
        version, weight = int(version_text), int(weight_text)
        if version < 1:
            raise VersionWeightsError(f"version_weights names version {version}; versions start at 1")
        if version in weights:
            raise VersionWeightsError(f"version_weights names version {version} twice")
        weights[version] = weight
    if sum(weights.values()) <= 0:
        raise VersionWeightsError("version_weights must give at least one version a weight above 0")
    return weights


def format_version_weights(weights: Mapping[int, int]) -> str:
    """{1: 90, 2: 10} -> "1:90,2:10" (ascending versions)."""
    return ",".join(f"{version}:{weights[version]}" for version in sorted(weights))


def config_version_weights(config: Any) -> dict[int, int] | None:
    """The parsed weights of a ModelConfig, or None when it has no version_weights parameter."""
    if VERSION_WEIGHTS_KEY not in config.parameters:
        return None
    return parse_version_weights(config.parameters[VERSION_WEIGHTS_KEY].string_value)


def version_weights_problem(config: Any, loaded_versions: Iterable[int] | None) -> str | None:
    """What is wrong with the config's version_weights (None when nothing, or no parameter).

    `loaded_versions`: the versions the version_policy selects, when known; every weighted version
    must be one of them, and at least one of them must get a weight above 0.
    """
    try:
        weights = config_version_weights(config)
    except VersionWeightsError as exc:
        return str(exc)
    if weights is None or loaded_versions is None:
        return None
    loaded = sorted(set(loaded_versions))
    outside = [version for version in sorted(weights) if version not in loaded]
    if outside:
        return (
            f"version_weights names version(s) {', '.join(map(str, outside))}, which the version_policy "
            f"does not load (it loads: {', '.join(map(str, loaded)) or 'none'})"
        )
    return None
