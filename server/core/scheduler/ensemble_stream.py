"""Ensembles with a decoupled step: each of its responses flows on through the later steps and
becomes one response of the ensemble, sent as it is made (as Triton streams such ensembles).

The steps run in dependency order, one at a time. At a decoupled step the flow branches: every
response it sends gets a copy of the tensors so far and runs the remaining steps; the ensemble's
answer of that branch goes into the request's stream at once. After the last branch the stream
gets its final flag (flags only). An error in any branch ends the request with that error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from server.core.upcalls import follow
from server.errors import InvalidInput, ServerError
from server.vocabulary.stream import ResponseStream

if TYPE_CHECKING:
    from server.core.scheduler.ensemble import EnsembleScheduler, EnsembleStep, _Flow


def _in_order(steps: list[EnsembleStep], known: set[str]) -> list[EnsembleStep]:
    """The steps in an order where each one's inputs are made before it runs."""
    ordered: list[EnsembleStep] = []
    waiting = list(steps)
    produced = set(known)
    while waiting:
        pending = {tensor for step in waiting for tensor in step.produces}
        ready = [s for s in waiting if not any(t in pending and t not in produced for _, t in s.input_map)]
        if not ready:
            raise InvalidInput(
                "unexpected deadlock, at least one output is not set while no more ensemble steps can be made"
            )
        for step in ready:
            waiting.remove(step)
            ordered.append(step)
            produced |= step.produces
    return ordered


async def stream_steps(scheduler: EnsembleScheduler, flow: _Flow) -> None:
    """Run `flow` through every step; its answers go to flow.request.stream, then a final."""
    stream = flow.request.stream
    assert stream is not None
    order = _in_order(list(scheduler.steps), set(flow.tensors))
    await _run(scheduler, flow, order)
    stream.put(None, True)


async def _run(scheduler: EnsembleScheduler, flow: _Flow, order: list[EnsembleStep]) -> None:
    from server.core.scheduler.ensemble import _Flow

    stream = flow.request.stream
    assert stream is not None
    for index, step in enumerate(order):
        target, step_request, model_batches = scheduler._step_request(step, flow)
        if not getattr(target, "decoupled", False):
            result = await target.scheduler.infer(step_request)
            scheduler._store(step, flow, result, model_batches)
            continue
        responses = ResponseStream()
        step_request.stream = responses
        stream.cancel_hooks.append(responses.cancel)  # the client leaving cancels the step too
        follow(target.scheduler.submit(step_request), step_request, responses)
        async for response, _final in responses:
            if isinstance(response, ServerError):
                raise response
            if response is None:
                continue
            branch = _Flow(flow.request, dict(flow.tensors), dict(flow.batched), flow.timings)
            scheduler._store(step, branch, response, model_batches)
            await _run(scheduler, branch, order[index + 1 :])
        return
    stream.put(scheduler._answer(flow), False)
