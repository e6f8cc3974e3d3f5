"""EnsembleScheduler: runs an ensemble's steps over its composing models, in the main process.

An ensemble (`platform: "ensemble"`) has no instances of its own. For each request, the ensemble's
tensors start as the request's inputs; a step runs as soon as every tensor its `input_map` reads
exists (steps that do not depend on each other run concurrently), as one request to the composing
model through that model's own validator and scheduler, so a composing model's dynamic batcher
batches the steps of concurrent ensemble requests together. The outputs its `output_map` names
join the ensemble's tensors; the answer holds the ensemble outputs the request asked for.

Tensor bytes are passed on, never copied, from one step to the next. The batch dimension passes
through: a batched tensor going to a model without batching loses a batch dimension of 1, an
unbatched one going to a batching model gains one (as Triton does).

Statistics as Triton keeps them for an ensemble: its own request counts and end-to-end durations,
one execution of the request's batch size per successful request, no queue time of its own, and
compute times summed over the composing requests (`ComposingTimings`). Errors of a step come back
with Triton's prefix: "in ensemble 'NAME', <the composing model's message>".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from server.core.scheduler.base import PendingCount, Scheduler
from server.errors import (
    BackendError,
    InvalidInput,
    ModelNotReady,
    QueueFull,
    RequestTimeout,
    ServerError,
    WorkerCrashed,
)
from server.vocabulary.types import (
    ComposingTimings,
    InferenceRequest,
    InferenceResult,
    RequestedOutput,
    Tensor,
)

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2

    from server.core.stats import ModelStats

_FAILURE_REASONS: dict[type[ServerError], str] = {
    BackendError: "BACKEND",
    WorkerCrashed: "BACKEND",
    QueueFull: "REJECTED",
    RequestTimeout: "REJECTED",
}


class ComposingModel(Protocol):
    """What a step needs of a loaded composing model version (server.core.model_version.LoadedVersion)."""

    @property
    def version(self) -> int: ...
    @property
    def config(self) -> model_config_pb2.ModelConfig: ...
    @property
    def validator(self) -> _Validator: ...
    @property
    def scheduler(self) -> Scheduler: ...


class _Validator(Protocol):
    def validate(self, request: InferenceRequest) -> None: ...


#: (model name, version: "" = the version policy's choice) -> the READY version; raises ServerError.
ComposingLookup = Callable[[str, str], ComposingModel]
#: How a step reaches its composing model, when not straight through its scheduler: the DataPlane
#: installs one with a response cache (server/core/response_cache.py: composing models that enable
#: it answer repeated steps from it, as in Triton).
StepRunner = Callable[[ComposingModel, InferenceRequest], Awaitable[InferenceResult]]
_step_runner: StepRunner | None = None


def install_step_runner(runner: StepRunner | None) -> None:
    global _step_runner  # noqa: PLW0603 - one per process, like the server's one DataPlane
    _step_runner = runner


@dataclass(frozen=True, slots=True)
class EnsembleStep:
    model_name: str
    model_version: str  # "" for -1: the composing model's version policy chooses
    input_map: tuple[tuple[str, str], ...]  # (model input, ensemble tensor)
    output_map: tuple[tuple[str, str], ...]  # (model output, ensemble tensor)

    @property
    def produces(self) -> frozenset[str]:
        return frozenset(tensor for _, tensor in self.output_map)


def ensemble_steps(config: model_config_pb2.ModelConfig) -> tuple[EnsembleStep, ...]:
    return tuple(
        EnsembleStep(
            model_name=step.model_name,
            model_version="" if step.model_version < 0 else str(step.model_version),
            input_map=tuple(sorted(step.input_map.items())),
            output_map=tuple(sorted(step.output_map.items())),
        )
        for step in config.ensemble_scheduling.step
    )


@dataclass(slots=True)
class _Flow:
    """One ensemble request on its way through the steps."""

    request: InferenceRequest
    tensors: dict[str, Tensor]  # ensemble tensor name -> tensor (data shared, never copied)
    batched: dict[str, bool]  # whether each tensor carries a batch dimension
    timings: ComposingTimings


class EnsembleScheduler(Scheduler):
    def __init__(
        self,
        config: model_config_pb2.ModelConfig,
        version: int,
        stats: ModelStats,
        lookup: ComposingLookup,
    ) -> None:
        self.model_name = config.name
        self.version = version
        self.stats = stats
        self.max_batch_size = int(config.max_batch_size)
        self.steps = ensemble_steps(config)
        self._lookup = lookup
        self._outputs = {output.name: tuple(int(d) for d in output.dims) for output in config.output}
        self._pending = PendingCount()
        self._accepting = False

    @property
    def pending(self) -> int:
        return self._pending.count

    @property
    def streams(self) -> bool:
        """Whether a step is decoupled: the ensemble then answers 0..N responses, like Triton's."""
        try:
            return any(
                getattr(self._lookup(step.model_name, step.model_version), "decoupled", False)
                for step in self.steps
            )
        except ServerError:
            return False

    async def start(self) -> None:
        self._accepting = True

    async def stop(self, drain: bool = True) -> None:
        # No queue of its own: requests in flight finish (or fail) in their composing models.
        self._accepting = False
        if drain:
            await self._pending.settled()

    async def infer(self, request: InferenceRequest) -> InferenceResult:
        if not self._accepting:
            raise ModelNotReady(f"'{self.model_name}' version {self.version} is not at ready state")
        self._pending.add()
        batched = self.max_batch_size > 0
        flow = _Flow(
            request,
            {tensor.name: tensor for tensor in request.inputs},
            dict.fromkeys((tensor.name for tensor in request.inputs), batched),
            ComposingTimings(),
        )
        try:
            if request.stream is not None:  # a decoupled step: answers as they come (ensemble_stream.py)
                await stream_steps(self, flow)
                result = InferenceResult(model=self.model_name, version=str(self.version), outputs=[])
            else:
                await self._run_steps(flow)
                result = self._answer(flow)
        except ServerError as exc:
            self.stats.record_failure(
                request_ns=time.monotonic_ns() - request.arrival_ns,
                reason=_FAILURE_REASONS.get(type(exc), "OTHER"),
            )
            raise type(exc)(f"in ensemble '{self.model_name}', {exc.message}") from None
        except asyncio.CancelledError:
            self.stats.record_failure(request_ns=time.monotonic_ns() - request.arrival_ns, reason="CANCELED")
            raise
        finally:
            self._pending.done()
        timings = flow.timings
        self.stats.record_execution(
            batch_size=request.batch_rows(self.max_batch_size),
            compute_input_ns=timings.compute_input_ns,
            compute_infer_ns=timings.compute_infer_ns,
            compute_output_ns=timings.compute_output_ns,
        )
        self.stats.record_success(
            request_ns=time.monotonic_ns() - request.arrival_ns,
            queue_ns=0,
            compute_input_ns=timings.compute_input_ns,
            compute_infer_ns=timings.compute_infer_ns,
            compute_output_ns=timings.compute_output_ns,
        )
        if request.timings is not None:  # this ensemble is itself a step of another one
            request.timings.add(timings.compute_input_ns, timings.compute_infer_ns, timings.compute_output_ns)
        return result

    # -- the steps ------------------------------------------------------------------------------

    async def _run_steps(self, flow: _Flow) -> None:
        waiting = list(self.steps)
        running: dict[asyncio.Task[None], EnsembleStep] = {}
        try:
            while waiting or running:
                pending_tensors = {t for step in (*waiting, *running.values()) for t in step.produces}
                ready = [step for step in waiting if not any(t in pending_tensors for _, t in step.input_map)]
                if not ready and not running:
                    raise InvalidInput(
                        "unexpected deadlock, at least one output is not set while no more ensemble "
                        "steps can be made"
                    )
                for step in ready:
                    waiting.remove(step)
                if len(ready) == 1 and not running:
                    # Nothing else can start before this step ends (a chain): no task needed.
                    await self._run_step(step=ready[0], flow=flow)
                    continue
                for step in ready:
                    running[asyncio.ensure_future(self._run_step(step=step, flow=flow))] = step
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    del running[task]
                    task.result()  # a failed step ends the request
        finally:
            for task in running:  # the other steps' answers have nobody to go to
                task.cancel()

    async def _run_step(self, *, step: EnsembleStep, flow: _Flow) -> None:
        target, step_request, model_batches = self._step_request(step, flow)
        runner = _step_runner
        result = await (
            runner(target, step_request) if runner is not None else target.scheduler.infer(step_request)
        )
        self._store(step, flow, result, model_batches)

    def _step_request(self, step: EnsembleStep, flow: _Flow) -> tuple[ComposingModel, InferenceRequest, bool]:
        """The composing model of `step` and its request, made of the flow's tensors."""
        target = self._lookup(step.model_name, step.model_version)
        config = target.config
        model_batches = config.max_batch_size > 0
        dims = {item.name: tuple(int(d) for d in item.dims) for item in config.input}
        inputs = []
        for model_input, tensor_name in step.input_map:
            tensor = flow.tensors.get(tensor_name)
            if tensor is None:
                continue  # an optional ensemble input the request left out
            shape = fit_batch_dim(
                tensor.shape, dims.get(model_input), flow.batched[tensor_name], model_batches
            )
            inputs.append(Tensor(model_input, tensor.datatype, shape, tensor.data))
        step_request = InferenceRequest(
            model=step.model_name,
            version=str(target.version),
            inputs=inputs,
            outputs=[RequestedOutput(model_output) for model_output, _ in step.output_map],
            id=flow.request.id,
            parameters=flow.request.parameters,
            timings=flow.timings,
        )
        target.validator.validate(step_request)
        return target, step_request, model_batches

    @staticmethod
    def _store(step: EnsembleStep, flow: _Flow, result: InferenceResult, model_batches: bool) -> None:
        """A step's outputs become the flow's tensors (by the step's output_map)."""
        produced = {tensor.name: tensor for tensor in result.outputs}
        for model_output, tensor_name in step.output_map:
            tensor = produced.get(model_output)
            if tensor is not None:
                flow.tensors[tensor_name] = tensor
                flow.batched[tensor_name] = model_batches

    def _answer(self, flow: _Flow) -> InferenceResult:
        request = flow.request
        names = [output.name for output in request.outputs] or list(self._outputs)
        outputs = []
        for name in names:
            tensor = flow.tensors.get(name)
            if tensor is None:
                raise InvalidInput(
                    "unexpected deadlock, at least one output is not set while no more ensemble "
                    "steps can be made"
                )
            shape = fit_batch_dim(
                tensor.shape, self._outputs[name], flow.batched[name], self.max_batch_size > 0
            )
            outputs.append(Tensor(name, tensor.datatype, shape, tensor.data))
        return InferenceResult(
            model=self.model_name, version=str(self.version), outputs=outputs, id=request.id
        )


def fit_batch_dim(
    shape: list[int], dims: tuple[int, ...] | None, has_batch_dim: bool, wants_batch_dim: bool
) -> list[int]:
    """The shape a tensor takes on its way into a model (or out of the ensemble): a batch dimension
    of 1 is added for a batching model and dropped for one without batching, when that makes the
    shape fit `dims`; any other mismatch is left for the model's validator to report."""
    if has_batch_dim == wants_batch_dim:
        return shape
    if wants_batch_dim:
        return [1, *shape]
    if shape and shape[0] == 1 and (dims is None or _fits(shape[1:], dims)):
        return shape[1:]
    return shape


def _fits(shape: list[int], dims: tuple[int, ...]) -> bool:
    return len(shape) == len(dims) and all(d in (-1, s) for s, d in zip(shape, dims, strict=True))


from server.core.scheduler.ensemble_stream import stream_steps  # noqa: E402 - it uses this module's types
