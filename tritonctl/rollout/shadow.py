"""The shadow check: the same requests to the current and the new version, answers and latency compared.

Inputs come from a file in perf_analyzer's `--input-data` JSON format, or are drawn at random
(seeded, so a rerun sends the same data) from the model's metadata. Requests alternate which
version goes first, so neither always meets a warmer cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from server.errors import ServerError
from tritonctl.rollout.errors import RolloutUsageError
from tritonctl.rollout.gates import OutputComparison, percentile_ms
from tritonctl.rollout.plan import Gates

if TYPE_CHECKING:
    from tritonctl.client import InferAnswer, ModelSignature

Sample = dict[str, tuple[str, npt.NDArray[Any]]]  # input name -> (datatype, array)

# A variable dimension of random inputs gets this size (use --inputs for real shapes).
RANDOM_DIM = 4


class InferServer(Protocol):
    def infer(
        self,
        model: str,
        inputs: dict[str, tuple[str, npt.NDArray[Any]]],
        outputs: list[str] | None = None,
        version: str = "",
    ) -> InferAnswer: ...


def _random_array(datatype: str, shape: list[int], rng: np.random.Generator) -> npt.NDArray[Any]:
    from server.vocabulary.dtypes import WIRE_TO_NUMPY

    if datatype == "BYTES":
        letters = rng.integers(ord("a"), ord("z") + 1, size=(int(np.prod(shape)), 8)).astype(np.uint8)
        return np.array([bytes(row) for row in letters], dtype=np.object_).reshape(shape)
    if datatype == "BOOL":
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    dtype = WIRE_TO_NUMPY.get(datatype)
    if dtype is None or datatype == "BF16":
        raise RolloutUsageError(f"cannot draw random {datatype} inputs: give the data with --inputs FILE")
    if dtype.kind in "iu":
        return rng.integers(0, 64, size=shape).astype(dtype)
    return rng.random(size=shape).astype(dtype)


def shadow_samples(
    signature: ModelSignature, batched: bool, inputs_file: Path | None, seed: int, count: int
) -> list[Sample]:
    """The distinct requests of a shadow run (requests cycle through them)."""
    if inputs_file is not None:
        from tritonctl.perf.errors import PerfUsageError
        from tritonctl.perf.inputs import InputSpec, load_json_steps

        specs = [
            InputSpec(spec.name, spec.datatype, spec.shape[1:] if batched else spec.shape, batched)
            for spec in signature.inputs
        ]
        try:
            steps = load_json_steps(inputs_file, specs, batch_size=1)
        except PerfUsageError as exc:
            raise RolloutUsageError(str(exc).replace("--input-data", "--inputs", 1)) from None
        types = {spec.name: spec.datatype for spec in signature.inputs}
        return [{name: (types[name], array) for name, array in step.items()} for step in steps]
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(max(count, 1)):
        sample: Sample = {}
        for spec in signature.inputs:
            shape = [
                1 if batched and i == 0 else (RANDOM_DIM if d < 0 else d) for i, d in enumerate(spec.shape)
            ]
            sample[spec.name] = (spec.datatype, _random_array(spec.datatype, shape, rng))
        samples.append(sample)
    return samples


@dataclass
class ShadowReport:
    """What a shadow run found; `problems` empty means the candidate passed."""

    current: int
    candidate: int
    requests: int = 0
    outputs: dict[str, OutputComparison] = field(default_factory=dict)
    current_latency_s: list[float] = field(default_factory=list)
    candidate_latency_s: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def p99_ratio(self) -> float | None:
        old, new = percentile_ms(self.current_latency_s, 99), percentile_ms(self.candidate_latency_s, 99)
        return new / old if old and new is not None else None

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "passed": self.passed,
            "problems": list(self.problems),
            "outputs": [vars(comparison) for comparison in self.outputs.values()],
            "latency_ms": {
                str(self.current): {
                    "p50": percentile_ms(self.current_latency_s, 50),
                    "p99": percentile_ms(self.current_latency_s, 99),
                },
                str(self.candidate): {
                    "p50": percentile_ms(self.candidate_latency_s, 50),
                    "p99": percentile_ms(self.candidate_latency_s, 99),
                },
            },
            "p99_ratio": self.p99_ratio,
        }


def _timed(
    server: InferServer, model: str, sample: Sample, version: int, clock: Callable[[], float]
) -> tuple[InferAnswer, float]:
    started = clock()
    answer = server.infer(model, sample, None, str(version))
    return answer, clock() - started


def run_shadow(
    server: InferServer,
    model: str,
    *,
    current: int,
    candidate: int,
    samples: list[Sample],
    count: int,
    gates: Gates,
    clock: Callable[[], float] = time.perf_counter,
) -> ShadowReport:
    """Send `count` requests (cycling through `samples`) to both versions and judge the candidate."""
    report = ShadowReport(current, candidate)
    for index in range(count):
        sample = samples[index % len(samples)]
        order = (current, candidate) if index % 2 == 0 else (candidate, current)
        answers: dict[int, InferAnswer] = {}
        for version in order:
            try:
                answer, seconds = _timed(server, model, sample, version, clock)
            except ServerError as exc:
                who = "the new version" if version == candidate else "the current version"
                report.problems.append(f"{who} ({version}) failed shadow request {index + 1}: {exc}")
                return report
            answers[version] = answer
            (report.candidate_latency_s if version == candidate else report.current_latency_s).append(seconds)
        report.requests += 1
        old = {output.name: output.data for output in answers[current].outputs}
        new = {output.name: output.data for output in answers[candidate].outputs}
        for name in sorted(set(old) | set(new)):
            report.outputs.setdefault(name, OutputComparison(name)).add(old.get(name), new.get(name), gates)
    for comparison in report.outputs.values():
        if comparison.mismatched:
            diff = (
                f", max |diff| {comparison.max_abs_diff:.3g}" if comparison.max_abs_diff is not None else ""
            )
            report.problems.append(
                f"output {comparison.name} differs in {comparison.mismatched} of {comparison.compared} "
                f"requests beyond atol {gates.atol:g} / rtol {gates.rtol:g}{diff}"
            )
    ratio = report.p99_ratio
    if ratio is not None and ratio > gates.max_p99_ratio:
        report.problems.append(
            f"p99 latency of the new version is {ratio:.2f}x the current one's (> {gates.max_p99_ratio:g})"
        )
    return report
