"""Cancellation, response senders and BLS calls for in-process instances (inline and thread modes).

The same seams as a worker process's side link (side.py, worker_side.py), without a process
boundary: the cancel flag is an attribute, streamed responses go straight into the request's
ResponseStream (from a model thread via call_soon_threadsafe), and a BLS call is handed to the
core's upcall handler on the event loop. An inline instance executes on the event loop itself, so
a BLS call there would wait on the loop it blocks: it is refused with an error response.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
import time
from typing import Any

from server.backends.base import Request, RequestControl, RequestOutputs
from server.errors import ServerError
from server.repository.instance_mode import INLINE
from server.vocabulary.stream import ResponseStream, StreamItem
from server.vocabulary.types import InferenceRequest, InferenceResult, RequestedOutput, Tensor
from server.workers.batch_io import select_outputs, to_bytes
from server.workers.custom_metrics import STORE, MetricSource
from server.workers.upcalls import current_upcall_handler
from server.workers.worker_side import CallItem

INLINE_REFUSAL = (
    "BLS calls are not available to an inline instance (TRITONCTL_INSTANCE_MODE inline): it executes "
    "on the server's event loop, which the call would wait on; use the thread or process mode"
)


class InProcessControl(RequestControl):
    __slots__ = (
        "cancelled",
        "deadline_ns",
        "loop",
        "loop_thread",
        "request_id",
        "result_model",
        "stream",
        "version",
    )

    def __init__(
        self, request: InferenceRequest, loop: asyncio.AbstractEventLoop, loop_thread: int, version: str
    ) -> None:
        super().__init__(request.stream is not None)
        self.stream: ResponseStream | None = request.stream
        self.cancelled = False
        self.loop = loop
        self.loop_thread = loop_thread
        self.result_model = request.model
        self.request_id = request.id
        self.version = version
        timeout_us = request.parameters.get("timeout") if request.parameters else None
        self.deadline_ns = (
            request.arrival_ns + timeout_us * 1000 if isinstance(timeout_us, int) and timeout_us > 0 else 0
        )
        request.cancel_hook = self.cancel

    def cancel(self) -> None:
        self.cancelled = True

    def is_cancelled(self) -> bool:
        return self.cancelled or (bool(self.deadline_ns) and time.monotonic_ns() > self.deadline_ns)

    def send(self, outputs: RequestOutputs | ServerError | None, final: bool) -> None:
        if not self.streamed or self.stream is None:
            super().send(outputs, final)
            return
        self.finished = self.finished or final
        request = self.streamed_request(final)
        response: InferenceResult | ServerError | None = None
        if isinstance(outputs, ServerError):
            response = outputs
        elif outputs is not None:
            try:
                selected = select_outputs(request, outputs)
            except ServerError as exc:
                response = exc
            else:
                response = InferenceResult(
                    model=self.result_model,
                    version=self.version,
                    outputs=[Tensor(n, d, s, to_bytes(data)) for n, d, s, data in selected],
                    id=self.request_id,
                    parameters=getattr(outputs, "parameters", None) or {},
                )
        if threading.get_ident() == self.loop_thread:
            self.stream.put(response, final)
        else:
            self.loop.call_soon_threadsafe(self.stream.put, response, final)


def attach_control(
    request: InferenceRequest,
    target: Request,
    loop: asyncio.AbstractEventLoop,
    loop_thread: int,
    version: str,
) -> None:
    control = InProcessControl(request, loop, loop_thread, version)
    control.attach(target)


class InProcessUpcalls:
    """The BLS client of an in-process instance (what pb_utils' exec() calls)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, mode: str, model_name: str) -> None:
        self.loop = loop
        self.model_name = model_name
        self.refusal = INLINE_REFUSAL if mode == INLINE else ""
        self._ids = itertools.count(1)
        self._streams: dict[int, ResponseStream] = {}
        self._metrics: MetricSource | None = None
        self.executing: list[InferenceRequest] = []  # the batch in execute() (inprocess.py)

    def connect_metrics(self, values: Any) -> None:
        """The instance's custom metrics (custom_metrics.MetricValues) go straight to the store."""
        source = self._metrics = MetricSource(values.view)

        def forward(record: dict[str, Any]) -> None:
            STORE.register(
                source,
                name=record["n"],
                description=record["d"],
                kind=record["k"],
                labels=record["l"],
                buckets=record["b"],
                slot=record["s"],
            )

        values.connect(forward)

    def close(self) -> None:
        if self._metrics is not None:
            STORE.remove(self._metrics)

    def call(
        self,
        *,
        model: str,
        version: int,
        request_id: str,
        inputs: list[tuple[str, str, list[int], Any]],
        outputs: list[str],
        parameters: dict[str, Any],
        timeout_us: int,
        decoupled: bool,
    ) -> tuple[int, queue.SimpleQueue[CallItem]]:
        call_id = next(self._ids)
        answers: queue.SimpleQueue[CallItem] = queue.SimpleQueue()
        request = InferenceRequest(
            model=model,
            version=str(version) if version > 0 else "",
            inputs=[Tensor(name, dtype, shape, to_bytes(data)) for name, dtype, shape, data in inputs],
            outputs=[RequestedOutput(name) for name in outputs],
            id=request_id,
            parameters=parameters,
        )
        waiting = dict.fromkeys(c for r in self.executing for c in r.callers)
        request.callers = (*waiting, self.model_name)

        def deliver(item: StreamItem) -> None:
            response, final = item
            if final:
                self._streams.pop(call_id, None)
            if isinstance(response, ServerError):
                answers.put((None, response.to_wire(), {}, final))
            elif response is None:
                answers.put((None, None, {}, final))
            else:
                tensors = [(t.name, t.datatype, t.shape, bytes(t.data)) for t in response.outputs]
                answers.put((tensors, None, response.parameters, final))

        stream = ResponseStream(on_item=deliver)
        self._streams[call_id] = stream

        def start() -> None:
            handler = current_upcall_handler()
            if handler is None:
                stream.put(ServerError("BLS calls are not available in this server"), True)
                return
            handler.start(
                request,
                stream,
                caller=self.model_name,
                decoupled=decoupled,
                timeout_s=timeout_us / 1e6 if timeout_us > 0 else None,
            )

        self.loop.call_soon_threadsafe(start)
        return call_id, answers

    def uncall(self, call_id: int) -> None:
        stream = self._streams.get(call_id)
        if stream is not None:
            self.loop.call_soon_threadsafe(stream.cancel)
