"""Requests with a stream of responses, and the models' own calls to models (BLS upcalls).

`start_stream(dataplane, request, stream)`: every answer of the request goes into `stream`, for
any model: a decoupled one puts 0..N responses and a final there itself (request.stream), any
other model's one result (or error) becomes the final item. Cancelling the stream withdraws the
request from its queue and raises the model's `is_cancelled()`.

`DataPlaneUpcalls` is what the worker channels hand a model's `InferenceRequest.exec()` to
(workers/upcalls.py): the call goes through the DataPlane like any client's request (the target's
own scheduler and batcher, its statistics), with these rules against deadlocks:
- a model calling itself is refused: its instance is the one executing the caller;
- `request_timeout` bounds the call: on expiry the caller gets "Request timeout expired" and the
  callee sees its request cancelled;
- inline (event-loop) instances cannot wait on the loop they run on: their calls are refused at
  the instance (workers/inprocess_side.py).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from server.errors import InvalidInput, RequestCancelled, RequestTimeout, ServerError
from server.vocabulary.eager import on_done
from server.vocabulary.stream import ResponseStream
from server.vocabulary.types import InferenceRequest, InferenceResult

if TYPE_CHECKING:
    from server.core.dataplane import DataPlane


def start_stream(dataplane: DataPlane, request: InferenceRequest, stream: ResponseStream) -> None:
    """Queue `request`, its answers going to `stream`; errors before queueing raise at once."""
    # route=False: only the DataPlane's submit below picks a version by weight (once per request)
    loaded = dataplane.table.get(request.model, request.version)
    if loaded.decoupled:
        request.stream = stream
    follow(dataplane.submit(request), request, stream)


def follow(
    future: asyncio.Future[InferenceResult], request: InferenceRequest, stream: ResponseStream
) -> None:
    """End `stream` with the future's error, or its one result when the request streams nothing
    itself; cancelling the stream cancels the request (also inside the model: is_cancelled)."""

    def settled(done: asyncio.Future[InferenceResult]) -> None:
        if done.cancelled():
            stream.put(RequestCancelled("Request was cancelled"), True)
            return
        error = done.exception()
        if error is not None:
            stream.put(error if isinstance(error, ServerError) else ServerError(str(error)), True)
        elif request.stream is None:
            stream.put(done.result(), True)

    def cancel() -> None:
        hook = request.cancel_hook
        if hook is not None:
            hook()
        future.cancel()

    on_done(future, settled)
    stream.cancel_hooks.append(cancel)


class DataPlaneUpcalls:
    """The core's answer to BLS calls (installed by the DataPlane)."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    def start(
        self,
        request: InferenceRequest,
        stream: ResponseStream,
        *,
        caller: str,
        decoupled: bool,
        timeout_s: float | None,
    ) -> None:
        if request.model in request.callers or request.model == caller:
            chain = " -> ".join((*request.callers, request.model))
            stream.put(
                InvalidInput(
                    f"BLS call cycle {chain}: model '{request.model}' is executing a request that waits "
                    "on this call, so the call could wait on itself"
                ),
                True,
            )
            return
        try:
            loaded = self.dataplane.table.get(request.model, request.version)
            if loaded.decoupled and not decoupled:
                raise InvalidInput(
                    f"model '{request.model}' uses the decoupled transaction policy: call it with "
                    "exec(decoupled=True)"
                )
            start_stream(self.dataplane, request, stream)
        except ServerError as exc:
            stream.put(exc, True)
            return
        except Exception as exc:  # a bug must answer the caller, never leave it waiting
            stream.put(ServerError(f"BLS call failed: {type(exc).__name__}: {exc}"), True)
            return
        if timeout_s is not None:
            loop = asyncio.get_running_loop()
            timer = loop.call_later(timeout_s, _expire, stream)
            stream.cancel_hooks.append(timer.cancel)
            _on_final(stream, timer.cancel)


def _expire(stream: ResponseStream) -> None:
    if stream.finished:
        return
    stream.put(RequestTimeout("Request timeout expired"), True)
    stream.cancel()


def _on_final(stream: ResponseStream, action: Any) -> None:
    """Run `action` once the stream's final item has been delivered."""
    deliver = stream.on_item
    if deliver is None:
        return

    def on_item(item: Any) -> None:
        deliver(item)
        if item[1]:
            action()

    stream.on_item = on_item
