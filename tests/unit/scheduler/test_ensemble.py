"""EnsembleScheduler over in-process composing models: step order, concurrency, the batch
dimension, errors and statistics (pure logic; the real server is in tests/integration/core)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2 as mc

from server.core.registry.composing_models import check_ensemble
from server.core.request_validator import RequestValidator
from server.core.scheduler.base import Scheduler
from server.core.scheduler.ensemble import EnsembleScheduler, fit_batch_dim
from server.core.stats import ModelStats
from server.errors import BackendError, LoadError, ModelNotFound
from server.vocabulary.types import InferenceRequest, InferenceResult, Tensor

Compute = Callable[[dict[str, np.ndarray]], Awaitable[dict[str, np.ndarray]]]


class FunctionScheduler(Scheduler):
    """A composing model's scheduler that runs `compute` on the request's arrays."""

    def __init__(self, compute: Compute) -> None:
        self.compute = compute
        self.requests: list[InferenceRequest] = []

    async def infer(self, request: InferenceRequest) -> InferenceResult:
        self.requests.append(request)
        arrays = {t.name: np.frombuffer(t.data, np.float32).reshape(t.shape) for t in request.inputs}
        outputs = await self.compute(arrays)
        if request.timings is not None:
            request.timings.add(1, 10, 100)
        wanted = {o.name for o in request.outputs} or set(outputs)
        return InferenceResult(
            request.model,
            request.version,
            [
                Tensor(n, "FP32", list(a.shape), a.astype(np.float32).tobytes())
                for n, a in outputs.items()
                if n in wanted
            ],
        )

    async def start(self) -> None:
        return None

    async def stop(self, drain: bool = True) -> None:
        return None

    @property
    def pending(self) -> int:
        return 0


@dataclass
class Composing:
    config: mc.ModelConfig
    scheduler: FunctionScheduler
    version: int = 1
    validator: RequestValidator = field(init=False)

    def __post_init__(self) -> None:
        self.validator = RequestValidator(self.config.name, self.config)


def config(
    name: str, inputs: list[str], outputs: list[str], *, max_batch_size: int = 4, dims: int = 3
) -> mc.ModelConfig:
    result = mc.ModelConfig(name=name, max_batch_size=max_batch_size)
    for tensor in inputs:
        result.input.add(name=tensor, data_type=mc.TYPE_FP32, dims=[dims])
    for tensor in outputs:
        result.output.add(name=tensor, data_type=mc.TYPE_FP32, dims=[dims])
    return result


def ensemble(steps: list[tuple[str, dict[str, str], dict[str, str]]], **options: int) -> mc.ModelConfig:
    result = config("e", ["X"], ["Y"], **options)
    result.platform = "ensemble"
    for model, input_map, output_map in steps:
        step = result.ensemble_scheduling.step.add(model_name=model, model_version=-1)
        step.input_map.update(input_map)
        step.output_map.update(output_map)
    return result


def request(x: np.ndarray) -> InferenceRequest:
    return InferenceRequest("e", "", [Tensor("X", "FP32", list(x.shape), x.astype(np.float32).tobytes())])


def output(result: InferenceResult, name: str = "Y") -> np.ndarray:
    tensor = next(t for t in result.outputs if t.name == name)
    return np.frombuffer(tensor.data, np.float32).reshape(tensor.shape)


def run(
    ensemble_config: mc.ModelConfig, models: dict[str, Composing], x: np.ndarray
) -> tuple[InferenceResult | BaseException, ModelStats]:
    stats = ModelStats()

    def lookup(name: str, version: str) -> Composing:
        if name not in models:
            raise ModelNotFound(f"Request for unknown model: '{name}' is not found")
        return models[name]

    async def scenario() -> InferenceResult:
        scheduler = EnsembleScheduler(ensemble_config, 1, stats, lookup)
        await scheduler.start()
        try:
            return await asyncio.wait_for(scheduler.infer(request(x)), 5)
        finally:
            await scheduler.stop()

    try:
        return asyncio.run(scenario()), stats
    except Exception as exc:
        return exc, stats


def test_steps_run_in_tensor_order_and_independent_steps_overlap() -> None:
    both_started = asyncio.Event()
    started: list[str] = []

    def branch(name: str, op: Callable[[np.ndarray], np.ndarray]) -> Composing:
        async def compute(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            started.append(name)
            if len(started) == 2:
                both_started.set()
            await both_started.wait()  # only returns if the other branch runs at the same time
            return {"OUT": op(arrays["IN"])}

        return Composing(config(name, ["IN"], ["OUT"]), FunctionScheduler(compute))

    async def add(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"SUM": arrays["A"] + arrays["B"]}

    models = {
        "double": branch("double", lambda a: 2 * a),
        "inc": branch("inc", lambda a: a + 1),
        "add": Composing(config("add", ["A", "B"], ["SUM"]), FunctionScheduler(add)),
    }
    steps = [  # listed last-first: order comes from the tensors
        ("add", {"A": "doubled", "B": "incremented"}, {"SUM": "Y"}),
        ("double", {"IN": "X"}, {"OUT": "doubled"}),
        ("inc", {"IN": "X"}, {"OUT": "incremented"}),
    ]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    result, stats = run(ensemble(steps), models, x)
    assert isinstance(result, InferenceResult), result
    np.testing.assert_array_equal(output(result), 3 * x + 1)
    assert sorted(started) == ["double", "inc"]
    step_request = models["add"].scheduler.requests[0]
    assert [t.name for t in step_request.inputs] == ["A", "B"] and step_request.outputs[0].name == "SUM"
    # Statistics: one execution of 2 rows; compute summed over the three composing requests.
    assert (stats.success_count, stats.inference_count, stats.execution_count) == (1, 2, 1)
    assert (stats.compute_input_ns, stats.compute_infer_ns, stats.compute_output_ns) == (3, 30, 300)
    assert stats.queue_ns == 0


def test_a_failed_step_fails_the_request_with_the_ensemble_prefix() -> None:
    async def broken(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise BackendError("boom")

    models = {"m": Composing(config("m", ["IN"], ["OUT"]), FunctionScheduler(broken))}
    result, stats = run(ensemble([("m", {"IN": "X"}, {"OUT": "Y"})]), models, np.ones((1, 3)))
    assert isinstance(result, BackendError) and result.message == "in ensemble 'e', boom"
    assert stats.fail_count == 1 and stats.failures_by_reason["BACKEND"] == 1 and stats.success_count == 0

    result, _ = run(ensemble([("gone", {"IN": "X"}, {"OUT": "Y"})]), models, np.ones((1, 3)))
    assert isinstance(result, ModelNotFound)
    assert result.message == "in ensemble 'e', Request for unknown model: 'gone' is not found"


def test_the_batch_dimension_passes_to_and_from_models_without_batching() -> None:
    async def negate(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"OUT": -arrays["IN"]}

    unbatched = Composing(config("neg", ["IN"], ["OUT"], max_batch_size=0), FunctionScheduler(negate))
    result, _ = run(ensemble([("neg", {"IN": "X"}, {"OUT": "Y"})]), {"neg": unbatched}, np.ones((1, 3)))
    assert isinstance(result, InferenceResult), result
    assert unbatched.scheduler.requests[0].inputs[0].shape == [3]  # batch dim of 1 dropped
    assert result.outputs[0].shape == [1, 3]  # and given back


def test_fit_batch_dim() -> None:
    assert fit_batch_dim([2, 3], (3,), True, True) == [2, 3]
    assert fit_batch_dim([3], (3,), False, True) == [1, 3]
    assert fit_batch_dim([1, 3], (3,), True, False) == [3]
    assert fit_batch_dim([2, 3], (3,), True, False) == [2, 3]  # left for the validator to refuse
    assert fit_batch_dim([1, 3], (1, 3), True, False) == [1, 3]


def test_steps_are_checked_against_the_configs_the_models_serve() -> None:
    steps = ensemble([("m", {"IN": "X"}, {"NOPE": "Y"})])
    with pytest.raises(LoadError, match=r'E402.*takes output "NOPE" of model "m", which has no such output'):
        check_ensemble("e", {"e": steps, "m": config("m", ["IN"], ["OUT"])})
    check_ensemble(
        "e", {"e": ensemble([("m", {"IN": "X"}, {"OUT": "Y"})]), "m": config("m", ["IN"], ["OUT"])}
    )

    loop_a = ensemble([("b", {"X": "X"}, {"Y": "Y"})])
    loop_b = ensemble([("e", {"X": "X"}, {"Y": "Y"})])
    loop_b.name = "b"
    with pytest.raises(LoadError, match=r"E403.*ensembles call each other in a loop: e -> b -> e"):
        check_ensemble("e", {"e": loop_a, "b": loop_b}, codes=("E403",))
