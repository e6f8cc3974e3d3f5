"""The side link of a worker process: streamed responses, cancellation flags and BLS upcalls.

Beside the control socket (one batch in, one answer out, in order: shm_channel.py) every worker
gets, once, with a `{"op": "side"}` record:

- a cancel board: one shared byte per request in flight (its "slot"). The main process sets the
  byte when the client goes away; the model's `request.is_cancelled()` reads it. No message.
- a side socket (SEQPACKET) for what comes at any time, in both directions:
    worker -> main  resp {"op":"resp", "s": slot, "o": [[name, dtype, shape, offset, size]...],
                          "e"?: [class, message], "p"?: params, "f": final 0|1, "h": ring position}
                    call {"op":"call", "c": id, "m": model, "v": version, "id": request id,
                          "i": [[name, dtype, shape, offset, size]...], "out": [names], "p": params,
                          "t": timeout_us, "d": decoupled 0|1, "h": ring position}
                    uncall {"op":"uncall", "c": id}            (the model cancelled a decoupled call)
    main -> worker  reply {"op":"reply", "c": id, "o"/"e"/"p"/"f"/"h" as resp}
  with a ring each way for the tensors (ring.py). The board's last byte is the model's own
  readiness (a python model's `is_ready()`, polled by the worker): 1 means not ready. A streamed
  request's slot stays taken until its final response (or its batch's answer says it was rescheduled);
  any other request's slot is freed with its batch's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any

from server.errors import ServerError, WorkerCrashed, from_wire
from server.vocabulary.stream import ResponseStream, StreamItem
from server.vocabulary.types import InferenceRequest, InferenceResult, RequestedOutput, Tensor
from server.workers.custom_metrics import STORE, MetricSource
from server.workers.ring import RingReader, RingWriter
from server.workers.shm import Receiver, Segment, decode, encode
from server.workers.upcalls import current_upcall_handler

log = logging.getLogger(__name__)
BOARD_SLOTS = 4096  # requests in flight per worker that the model can see cancelled
READY_BYTE = BOARD_SLOTS  # the board's last byte: 1 while the model's is_ready() says False


class SideLink:
    """The main process's end of a worker's side link."""

    def __init__(
        self,
        model_name: str,
        version: int,
        instance_name: str,
        batch_callers: Callable[[int], tuple[str, ...]] | None = None,
    ) -> None:
        self.model_name = model_name
        self.version_text = str(version)
        self.instance_name = instance_name
        # seq of a batch in flight -> the models its requests' BLS calls wait in (the channel knows)
        self._batch_callers = batch_callers
        self._loop = asyncio.get_running_loop()
        self.board = Segment.create(f"board_{instance_name}", BOARD_SLOTS + 1)
        self._sock, self._worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock.setblocking(False)
        self._receiver = Receiver(self._sock)
        # Slots and their cancel hooks are made on first use (a thousand idle models must not hold
        # 4096 closures each, ~1.4 MB per instance): `_fresh` is the next never-used slot.
        self._free: list[int] = []
        self._fresh = 0
        self._owners: list[InferenceRequest | None] = [None] * BOARD_SLOTS
        self._hooks: list[Callable[[], None]] = []
        self._from_worker = RingReader()
        self._to_worker = RingWriter(f"reply_{instance_name}")
        self._calls: dict[int, ResponseStream] = {}
        self._metrics: MetricSource | None = None  # custom metrics (workers/custom_metrics.py)
        self._metric_segment: Segment | None = None
        self._open = True
        self._loop.add_reader(self._sock.fileno(), self._on_readable)

    def handover(self) -> tuple[bytes, list[int]]:
        """The record and descriptors that give the worker its end (send once, on the control socket)."""
        return encode({"op": "side", "slots": BOARD_SLOTS}), [self.board.fd, self._worker_end.fileno()]

    def handed_over(self) -> None:
        self._worker_end.close()
        self.board.drop_fd()  # the worker has it (a thousand models: descriptors count)

    @property
    def model_ready(self) -> bool:
        """False while the model's is_ready() says so (the worker polls it: worker_side.py)."""
        return not self.board.view[READY_BYTE]

    # -- requests in flight -------------------------------------------------------------------------

    def admit(self, request: InferenceRequest) -> int:
        """A slot for the request (-1 when the board is full: the model cannot see it cancelled)."""
        if self._free:
            slot = self._free.pop()
        elif self._fresh < BOARD_SLOTS:
            slot = self._fresh
            self._fresh += 1
            self._hooks.append(self._cancel_hook(slot))
        else:
            return -1
        self.board.view[slot] = 0
        self._owners[slot] = request
        request.cancel_hook = self._hooks[slot]
        return slot

    def answered(self, request: InferenceRequest, slot: int, rescheduled: bool = False) -> None:
        """The request's batch is answered; a streamed request keeps its slot until its final, or
        until it is rescheduled (it gets a slot again with its next execution)."""
        if slot < 0:
            return
        if request.stream is None:
            self._release(slot)
        elif rescheduled:
            # The responses it sent before execute() returned are on the side socket already (the
            # worker sent them before this answer): deliver them before the slot can change owner.
            self._on_readable()
            self._release(slot)

    def _release(self, slot: int) -> None:
        request = self._owners[slot]
        if request is not None:
            request.cancel_hook = None
            self._owners[slot] = None
            self._free.append(slot)

    def _cancel_hook(self, slot: int) -> Callable[[], None]:
        def cancel() -> None:
            if self._owners[slot] is not None and self._open:
                self.board.view[slot] = 1

        return cancel

    # -- messages from the worker ------------------------------------------------------------------

    def _on_readable(self) -> None:
        while self._open:
            try:
                received = self._receiver.receive()
            except BlockingIOError:
                return
            except (OSError, ValueError) as exc:
                log.warning("instance %s: unreadable side message (%s)", self.instance_name, exc)
                return
            if received is None:
                self._loop.remove_reader(self._sock.fileno())
                return
            message, fds = received
            try:
                record = decode(message)
                op = record["op"]
                if op == "metric":
                    self._on_metric(record, fds)
                    continue
                self._from_worker.attach(fds)
                if op == "resp":
                    self._on_response(record)
                elif op == "call":
                    self._on_call(record)
                elif op == "uncall":
                    stream = self._calls.get(int(record["c"]))
                    if stream is not None:
                        stream.cancel()
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("instance %s: malformed side message (%s)", self.instance_name, exc)

    def _on_metric(self, record: dict[str, Any], fds: list[int]) -> None:
        if fds:
            segment = Segment.attach(fds[0])
            self._metric_segment = segment
            self._metrics = MetricSource(segment.view.cast("d"))
        if self._metrics is None:
            return
        STORE.register(
            self._metrics,
            name=str(record["n"]),
            description=str(record.get("d", "")),
            kind=int(record["k"]),
            labels=dict(record.get("l") or {}),
            buckets=list(record.get("b") or ()),
            slot=int(record["s"]),
        )

    def _tensors(self, entries: list[list[Any]] | None) -> list[Tensor]:
        read = self._from_worker.read
        return [
            Tensor(name, datatype, shape, read(offset, size))
            for name, datatype, shape, offset, size in entries or ()
        ]

    def _on_response(self, record: dict[str, Any]) -> None:
        slot = int(record["s"])
        final = bool(record["f"])
        request = self._owners[slot] if 0 <= slot < BOARD_SLOTS else None
        response: InferenceResult | ServerError | None = None
        error = record.get("e")
        if error is not None:
            response = from_wire(error[0], error[1])
            response.model_response = True
        elif record.get("o") is not None:
            response = InferenceResult(
                model=request.model if request is not None else self.model_name,
                version=self.version_text,
                outputs=self._tensors(record["o"]),
                id=request.id if request is not None else "",
                parameters=record.get("p") or {},
            )
        self._from_worker.consumed(int(record["h"]))
        if request is None:
            return
        if request.stream is not None:
            request.stream.put(response, final)
        if final:
            self._release(slot)

    def _on_call(self, record: dict[str, Any]) -> None:
        call_id = int(record["c"])
        request = InferenceRequest(
            model=record["m"],
            version=str(record.get("v") or ""),
            inputs=self._tensors(record["i"]),
            outputs=[RequestedOutput(name) for name in record.get("out") or ()],
            id=record.get("id") or "",
            parameters=record.get("p") or {},
        )
        batch = int(record.get("b", -1))
        waiting = self._batch_callers(batch) if self._batch_callers is not None and batch >= 0 else ()
        request.callers = (*waiting, self.model_name)
        self._from_worker.consumed(int(record["h"]))
        stream = ResponseStream(on_item=lambda item: self._reply(call_id, item))
        self._calls[call_id] = stream
        handler = current_upcall_handler()
        if handler is None:
            stream.put(ServerError("BLS calls are not available in this server"), True)
            return
        timeout_us = int(record.get("t") or 0)
        handler.start(
            request,
            stream,
            caller=self.model_name,
            decoupled=bool(record.get("d")),
            timeout_s=timeout_us / 1e6 if timeout_us > 0 else None,
        )

    def _reply(self, call_id: int, item: StreamItem) -> None:
        response, final = item
        if final:
            self._calls.pop(call_id, None)
        if not self._open:
            return
        body: dict[str, Any] = {"op": "reply", "c": call_id, "f": int(final)}
        tensors: list[Tensor] = []
        if isinstance(response, ServerError):
            body["e"] = list(response.to_wire())
        elif response is not None:
            tensors = response.outputs
            if response.parameters:
                body["p"] = response.parameters
        writer = self._to_worker
        with writer.lock:
            offsets, head, fds = writer.reserve([len(memoryview(t.data).cast("B")) for t in tensors])
            entries = []
            for tensor, offset in zip(tensors, offsets, strict=True):
                data = memoryview(tensor.data).cast("B")
                writer.write(offset, data)
                entries.append([tensor.name, tensor.datatype, tensor.shape, offset, len(data)])
            if response is not None and not isinstance(response, ServerError):
                body["o"] = entries
            body["h"] = head
            try:
                message = encode(body)
                if fds:
                    socket.send_fds(self._sock, [message], fds)
                else:
                    self._sock.send(message)
            except (OSError, ValueError) as exc:
                log.warning("instance %s: cannot answer a BLS call (%s)", self.instance_name, exc)

    # -- end of life -------------------------------------------------------------------------------

    def fail_all(self, error: WorkerCrashed) -> None:
        """The worker is gone: end every open stream with the error, cancel its BLS calls."""
        self._open = False
        for slot in range(self._fresh):  # slots past `_fresh` were never used
            request = self._owners[slot]
            if request is not None:
                if request.stream is not None:
                    request.stream.put(error, True)
                self._release(slot)
        calls, self._calls = self._calls, {}
        for stream in calls.values():
            stream.cancel()

    def close(self) -> None:
        if self.board.closed:
            return
        self._open = False
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        if self._worker_end.fileno() >= 0:
            self._worker_end.close()
        self._from_worker.close()
        self._to_worker.close()
        self.board.close()
        # The channel's bound method refers back to the channel: without this, every closed
        # instance is a reference cycle left to the collector (whole-heap pauses, late munmaps).
        self._batch_callers = None
        self._hooks.clear()  # each cancel hook closes over this link
        if self._metrics is not None:
            STORE.remove(self._metrics)
            self._metrics = None
        if self._metric_segment is not None:
            self._metric_segment.close()
