"""Rules that need the whole repository: ensemble steps must name models that exist, map tensors
those models have, produce every ensemble output, and never form a cycle."""

from __future__ import annotations

from typing import Any

from server.repository.diagnostics import Diagnostic
from server.repository.findings import Findings
from server.repository.layout import PLATFORM_ALIASES
from server.repository.loader import ModelEntry
from server.repository.schema import ConfigSource


def _is_ensemble(config: Any) -> bool:
    return bool(PLATFORM_ALIASES.get(config.platform, config.platform) == "ensemble")


def _tensor_names(config: Any, field: str) -> set[str] | None:
    """Names of a step model's inputs or outputs; None when its config leaves them to auto-complete."""
    tensors = getattr(config, field)
    return {t.name for t in tensors} if tensors else None


def _check_steps(config: Any, models: dict[str, ModelEntry], found: Findings) -> None:
    if not config.ensemble_scheduling.step:
        return  # E404 (rules.py) already says so
    locations = found.source.locations
    available = {t.name for t in config.input}
    for step in config.ensemble_scheduling.step:
        available.update(step.output_map.values())
    produced: set[str] = set()
    for index, step in enumerate(config.ensemble_scheduling.step):
        step_path = f"ensemble_scheduling.step[{index}]"
        target = models.get(step.model_name)
        if target is None or target.config is None:
            produced.update(step.output_map.values())  # reported once here, not again as missing outputs
            reason = "is not in the repository" if target is None else "has a config that does not parse"
            found.error(
                "E401-ensemble-unknown-model",
                f"{step_path}.model_name",
                f'step {index + 1} runs model "{step.model_name}", which {reason}',
                f'add the model folder "{step.model_name}" or fix model_name',
            )
            continue
        inputs = _tensor_names(target.config, "input")
        outputs = _tensor_names(target.config, "output")
        for key, value in sorted(step.input_map.items()):
            path = locations.map_entry(f"{step_path}.input_map", key)
            if inputs is not None and key not in inputs:
                found.error(
                    "E402-ensemble-unknown-tensor",
                    path,
                    f'step {index + 1} feeds input "{key}" of model "{step.model_name}", which has no such '
                    f"input (it has: {', '.join(sorted(inputs))})",
                    "use one of the model's input names as the input_map key",
                )
            if value not in available:
                found.error(
                    "E402-ensemble-unknown-tensor",
                    path,
                    f'step {index + 1} reads tensor "{value}", which is neither an ensemble input nor '
                    "produced by any step",
                    "map it from an ensemble input or from another step's output_map value",
                )
        for key, value in sorted(step.output_map.items()):
            produced.add(value)
            if outputs is not None and key not in outputs:
                found.error(
                    "E402-ensemble-unknown-tensor",
                    locations.map_entry(f"{step_path}.output_map", key),
                    f'step {index + 1} takes output "{key}" of model "{step.model_name}", which has no such '
                    f"output (it has: {', '.join(sorted(outputs))})",
                    "use one of the model's output names as the output_map key",
                )
    for index, output in enumerate(config.output):
        if output.name not in produced:
            found.error(
                "E405-ensemble-output-not-produced",
                f"output[{index}].name",
                f'ensemble output "{output.name}" is not produced by any step',
                f'add "{output.name}" as an output_map value of the step that computes it',
            )


def _model_cycle(name: str, models: dict[str, ModelEntry]) -> list[str] | None:
    """A chain of ensembles starting and ending at `name`, if one exists."""

    def visit(current: str, chain: list[str]) -> list[str] | None:
        entry = models.get(current)
        if entry is None or entry.config is None or not _is_ensemble(entry.config):
            return None
        for step in entry.config.ensemble_scheduling.step:
            if step.model_name == name:
                return [*chain, name]
            if step.model_name not in chain:
                found = visit(step.model_name, [*chain, step.model_name])
                if found:
                    return found
        return None

    return visit(name, [name])


def _tensor_cycle(config: Any) -> bool:
    """Whether the steps' tensors depend on each other in a loop."""
    producer = {
        v: i for i, step in enumerate(config.ensemble_scheduling.step) for v in step.output_map.values()
    }
    edges = {
        i: {producer[v] for v in step.input_map.values() if v in producer}
        for i, step in enumerate(config.ensemble_scheduling.step)
    }
    state: dict[int, int] = {}  # 1 visiting, 2 done

    def visit(node: int) -> bool:
        state[node] = 1
        for nxt in edges[node]:
            if state.get(nxt) == 1 or (nxt not in state and visit(nxt)):
                return True
        state[node] = 2
        return False

    return any(node not in state and visit(node) for node in edges)


def check_ensembles(models: dict[str, ModelEntry]) -> list[Diagnostic]:
    """Cross-model rules of every ensemble in a repository scan."""
    diagnostics: list[Diagnostic] = []
    for name, entry in models.items():
        if entry.config is None or not _is_ensemble(entry.config):
            continue
        found = Findings(name, entry.source or ConfigSource(entry.config_source))
        _check_steps(entry.config, models, found)
        cycle = _model_cycle(name, models)
        if cycle:
            found.error(
                "E403-ensemble-cycle",
                "ensemble_scheduling",
                f"ensembles call each other in a loop: {' -> '.join(cycle)}",
                "break the loop: an ensemble cannot (indirectly) contain itself",
            )
        elif _tensor_cycle(entry.config):
            found.error(
                "E403-ensemble-cycle",
                "ensemble_scheduling",
                "the steps' tensors depend on each other in a loop",
                "make the steps form a chain or tree: no step may consume what it (indirectly) produces",
            )
        diagnostics.extend(found.items)
    return diagnostics
