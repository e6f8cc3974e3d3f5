"""Measure every (case, system) pair round after round, rotating which system goes first.

This 2-core machine is shared and its load drifts by the minute, so one long measurement per
system would compare two different machines. Instead each round measures every system once per
case, back to back, with the order rotated each round; the report takes medians over rounds and
shows the per-round ratios so a reader sees whether they agree.
"""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.peers.load import LoadError, Sample

RETRIES = 1
LOAD1 = "load1"  # the machine's 1-minute load average when the sample started

Plan = list[tuple[str, list[str]]]  # (case, the systems measured on it)
Measure = Callable[[str, str], Sample]  # (case, system) -> one sample


@dataclass
class Cell:
    """Every sample of one system on one case of one scenario."""

    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def median(self, metric: str) -> float | None:
        values = [sample[metric] for sample in self.samples if metric in sample]
        return statistics.median(values) if values else None

    def values(self, metric: str) -> list[float]:
        return [sample[metric] for sample in self.samples if metric in sample]


@dataclass
class Results:
    """Everything one harness run measured, keyed by (scenario, case, system)."""

    cells: dict[tuple[str, str, str], Cell] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    scenarios: list[str] = field(default_factory=list)

    def cell(self, scenario: str, case: str, system: str) -> Cell:
        if scenario not in self.scenarios:
            self.scenarios.append(scenario)
        return self.cells.setdefault((scenario, case, system), Cell())

    def find(self, scenario: str, case: str, system: str) -> Cell | None:
        return self.cells.get((scenario, case, system))

    def note(self, scenario: str, text: str) -> None:
        self.notes.setdefault(scenario, []).append(text)

    def cases(self, scenario: str) -> list[str]:
        return list(dict.fromkeys(case for (name, case, _) in self.cells if name == scenario))

    def systems(self, scenario: str) -> list[str]:
        return list(dict.fromkeys(system for (name, _, system) in self.cells if name == scenario))

    def loads(self) -> list[float]:
        return [sample[LOAD1] for cell in self.cells.values() for sample in cell.samples if LOAD1 in sample]

    def to_json(self) -> dict[str, Any]:
        return {
            "cells": [
                {"scenario": s, "case": c, "system": y, "samples": cell.samples, "errors": cell.errors}
                for (s, c, y), cell in self.cells.items()
            ],
            "notes": self.notes,
        }


def _describe(sample: Sample) -> str:
    shown = [f"{value:.1f} {name}" for name, value in sample.items() if name != LOAD1]
    return ", ".join(shown) + f" (load {sample.get(LOAD1, 0.0):.1f})"


def _measure_with_retry(measure: Measure, case: str, system: str, cell: Cell, prefix: str) -> Sample | None:
    """One sample; a failed attempt is kept in `cell.errors` and tried once more (Triton's python
    backend sometimes dies loading 50 models on this loaded machine: boost lock_exception)."""
    for attempt in range(1 + RETRIES):
        try:
            return measure(case, system)
        except (LoadError, RuntimeError, TimeoutError) as exc:
            cell.errors.append(str(exc)[-2000:])
            again = "; retrying" if attempt < RETRIES else ""
            print(f"{prefix} FAILED{again}: {str(exc)[-500:]}", file=sys.stderr)
    return None


def alternate(
    results: Results,
    scenario: str,
    plan: Plan,
    *,
    rounds: int,
    measure: Measure,
    warmup: Callable[[str, str], object] | None = None,
) -> None:
    """Warm every pair up once (discarded), then `rounds` rounds of every pair, order rotated per round."""
    for case, systems in plan:
        for system in systems:
            results.cell(scenario, case, system)  # fixes the table order
            try:
                (warmup or measure)(case, system)
            except (LoadError, RuntimeError, TimeoutError) as exc:
                print(f"[{scenario}] warm-up {case} {system} failed: {exc}", file=sys.stderr)
    for round_index in range(rounds):
        for case, systems in plan:
            shift = round_index % len(systems)
            for system in systems[shift:] + systems[:shift]:
                load1 = os.getloadavg()[0]
                cell = results.cell(scenario, case, system)
                prefix = f"[{scenario} {round_index + 1}/{rounds}] {case:<18} {system:<12}"
                found = _measure_with_retry(measure, case, system, cell, prefix)
                if found is None:
                    continue
                sample = dict(found)
                sample[LOAD1] = load1
                cell.samples.append(sample)
                print(f"{prefix} {_describe(sample)}", file=sys.stderr, flush=True)
