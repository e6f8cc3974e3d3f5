"""What a rollout will do: its settings, the plan drawn from the server's state, and the configs it loads.

Every change a rollout makes is a config-override load of the model's own config with two fields
edited: `version_policy` (which versions are loaded) and the `version_weights` parameter (how
requests that name no version are split). So the server keeps the instances of every version that
stays loaded, and going back is loading the original config again.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.repository.version_weights import VERSION_WEIGHTS_KEY, format_version_weights
from tritonctl.rollout.errors import RolloutError, RolloutUsageError

DEFAULT_STEPS = (10, 50, 100)


@dataclass(frozen=True)
class Gates:
    """When the candidate is good enough to take more traffic."""

    atol: float = 1e-5  # shadow outputs: |new - old| <= atol + rtol * |old| element-wise
    rtol: float = 1e-4
    max_p99_ratio: float = 2.0  # candidate latency / current latency (shadow p99; canary mean)
    max_error_rate: float = 0.01  # failed / all requests of the candidate during a canary step


@dataclass(frozen=True)
class RolloutSettings:
    to_version: int
    steps: tuple[int, ...] = DEFAULT_STEPS
    hold_secs: float = 30.0
    gates: Gates = Gates()
    shadow_requests: int = 50
    inputs_file: Path | None = None
    seed: int = 0
    poll_secs: float = 1.0  # how often a canary step reads the server's statistics


def parse_steps(text: str) -> tuple[int, ...]:
    """`"10,50,100"` -> (10, 50, 100): rising percentages of traffic for the new version, ending at 100."""
    try:
        steps = tuple(int(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise RolloutUsageError(f"--steps {text!r}: expected rising percentages such as 10,50,100") from None
    if not steps or any(not 0 < step <= 100 for step in steps):
        raise RolloutUsageError(f"--steps {text!r}: every step must be a percentage in 1..100")
    if any(later <= earlier for earlier, later in itertools.pairwise(steps)):
        raise RolloutUsageError(f"--steps {text!r}: steps must rise, e.g. 10,50,100")
    return steps if steps[-1] == 100 else (*steps, 100)


def step_weights(current: int, target: int, percent: int) -> dict[int, int]:
    """Weights that send `percent` % of unversioned requests to `target`, the rest to `current`."""
    return {current: 100 - percent, target: percent}


def routed_config(
    original: dict[str, Any], versions: list[int], weights: dict[int, int] | None
) -> dict[str, Any]:
    """The original config (Triton's JSON shape) with another version policy and weights.

    `weights` None drops the version_weights parameter (requests then go to the highest version).
    """
    config = copy.deepcopy(original)
    config["version_policy"] = {"specific": {"versions": sorted(versions)}}
    parameters = dict(config.get("parameters") or {})
    parameters.pop(VERSION_WEIGHTS_KEY, None)
    if weights is not None:
        parameters[VERSION_WEIGHTS_KEY] = {"string_value": format_version_weights(weights)}
    config["parameters"] = parameters
    return config


def config_weights(config: dict[str, Any]) -> dict[int, int] | None:
    """The version_weights of a config in JSON shape, or None (unparseable text counts as none)."""
    from server.repository.version_weights import VersionWeightsError, parse_version_weights

    value = (config.get("parameters") or {}).get(VERSION_WEIGHTS_KEY)
    if not isinstance(value, dict):
        return None
    try:
        return parse_version_weights(str(value.get("string_value", "")))
    except VersionWeightsError:
        return None


def describe_policy(config: dict[str, Any]) -> str:
    """`specific [1, 2]`, `latest 1`, `all` for people."""
    policy = config.get("version_policy") or {}
    if "specific" in policy:
        return f"specific {sorted(int(v) for v in policy['specific'].get('versions', []))}"
    if "all" in policy:
        return "all"
    latest = policy.get("latest") or {}
    return f"latest {int(latest.get('num_versions', 1) or 1)}"


def ready_versions(index: list[dict[str, str]], model: str) -> list[int]:
    """Versions of `model` the repository index shows READY."""
    return sorted(
        int(entry["version"])
        for entry in index
        if entry.get("name") == model
        and entry.get("state") == "READY"
        and str(entry.get("version", "")).isdigit()
    )


@dataclass(frozen=True)
class RolloutPlan:
    """A rollout of `model` from `from_version` to `to_version`, drawn from the server's state."""

    model: str
    from_version: int
    to_version: int
    settings: RolloutSettings
    original_config: dict[str, Any]
    target_known: str  # what the index says about the target version before the rollout

    @property
    def batched(self) -> bool:
        return int(self.original_config.get("max_batch_size", 0) or 0) > 0

    @property
    def original_policy(self) -> str:
        return describe_policy(self.original_config)

    def describe(self) -> list[str]:
        old, new, settings = self.from_version, self.to_version, self.settings
        gates = settings.gates
        steps = ", ".join(f"{step}%" for step in settings.steps)
        return [
            f"load version {new} beside {old}: policy specific [{old}, {new}], weights {old}:100 "
            f"({self.target_known})",
            f"shadow check: {settings.shadow_requests} requests to both versions; outputs within "
            f"atol {gates.atol:g} + rtol {gates.rtol:g}, p99 latency ratio <= {gates.max_p99_ratio:g}",
            f"canary: {steps} of unversioned traffic to version {new}, {settings.hold_secs:g}s each; "
            f"error rate <= {gates.max_error_rate:g}, mean latency ratio <= {gates.max_p99_ratio:g}",
            f"promote: policy specific [{new}]; version {old} unloads after its requests drain",
            f"on any failure or Ctrl-C: load the original config again (policy {self.original_policy})",
        ]


def draw_plan(
    model: str, settings: RolloutSettings, index: list[dict[str, str]], config: dict[str, Any]
) -> RolloutPlan:
    """Check the server's state allows the rollout and say what it will do (no change is made)."""
    if settings.to_version < 1:
        raise RolloutUsageError(f"--to-version {settings.to_version}: versions start at 1")
    if not any(entry.get("name") == model for entry in index):
        raise RolloutError(f"model '{model}' is not in the server's repository index")
    serving = ready_versions(index, model)
    weights = config_weights(config)
    if weights and len(serving) > 1:
        serving = [version for version in serving if weights.get(version, 0) > 0]
    if not serving:
        raise RolloutError(f"model '{model}' has no READY version to roll out from: load it first")
    if len(serving) > 1:
        raise RolloutError(
            f"model '{model}' serves versions {', '.join(map(str, serving))} at once; a rollout starts from "
            "one version (finish or roll back the previous rollout first)"
        )
    current = serving[0]
    if settings.to_version == current:
        raise RolloutError(f"version {current} of '{model}' already serves all traffic")
    known = [
        entry
        for entry in index
        if entry.get("name") == model and str(entry.get("version", "")) == str(settings.to_version)
    ]
    if known:
        state, reason = known[0].get("state", ""), known[0].get("reason", "")
        target_known = f"the index lists it as {state}" + (f": {reason}" if reason else "")
    else:
        target_known = "not loaded before; the load checks its folder"
    return RolloutPlan(model, current, settings.to_version, settings, config, target_known)
