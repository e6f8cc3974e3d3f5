"""What loading an ensemble needs besides its own config: its composing models, checked.

Triton loads an ensemble only once every composing model serves, and refuses steps that name
models, inputs or outputs those models do not have, and ensembles that call each other in a
loop. The rules are the repository's own (server/repository/ensemble.py, what `tritonctl
validate` prints): here they run over the configs the composing models serve, which may have
been completed while loading (a python model's `auto_complete_config`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from server.errors import LoadError
from server.repository import ModelConfig, backend_name
from server.repository.ensemble import check_ensembles
from server.repository.loader import ModelEntry
from server.repository.schema import ConfigSource


def is_ensemble(config: ModelConfig) -> bool:
    return backend_name(config) == "ensemble"


def composing_names(config: ModelConfig) -> list[str]:
    """The models an ensemble's steps run, each once, in step order."""
    return list(dict.fromkeys(step.model_name for step in config.ensemble_scheduling.step))


def reachable_configs(
    config: ModelConfig, read_config: Callable[[str], ModelConfig | None]
) -> dict[str, ModelConfig | None]:
    """The configs of every model the ensemble reaches through its steps (ensembles followed),
    as `read_config` finds them (None: missing or unreadable)."""
    found: dict[str, ModelConfig | None] = {config.name: config}
    waiting = composing_names(config)
    while waiting:
        name = waiting.pop()
        if name in found:
            continue
        found[name] = current = read_config(name)
        if current is not None and is_ensemble(current):
            waiting.extend(composing_names(current))
    return found


def check_ensemble(
    name: str, configs: dict[str, ModelConfig | None], codes: tuple[str, ...] | None = None
) -> None:
    """Raise LoadError with the repository rules' words when the ensemble `name` cannot run over
    `configs` (its own and its composing models' configs; None for a model that is missing).
    `codes` limits the check to diagnostics whose code starts with one of them."""
    entries: dict[str, ModelEntry] = {}
    for model, config in configs.items():
        if config is None:
            continue  # a missing model is reported by the rule that looks for it
        entries[model] = ModelEntry(model, Path(model), config, "config.pbtxt", [], [], ConfigSource(""))
    errors = [
        d
        for d in check_ensembles(entries)
        if d.model == name and d.severity == "error" and (codes is None or d.code.startswith(codes))
    ]
    if errors:
        raise LoadError("\n".join(str(d) for d in errors))


def composing_failure(name: str, model: str, reason: str) -> LoadError:
    return LoadError(f"ensemble '{name}' depends on '{model}', which is not available: {reason}")
