"""The worker's end of the side link (side.py has the main process's end and the record formats).

`WorkerSide.control(raw, request)` gives each request of a batch its RequestControl: the cancel
board byte behind `is_cancelled()`, and `send()` for response senders, which writes a streamed
response's tensors into the ring and sends it at once, from whatever thread the model calls it.
`call(...)` is a BLS upcall: inputs through the ring, answers read back by one reader thread.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import socket
import threading
import time
from typing import Any

from server.backends.base import Request, RequestControl, RequestOutputs
from server.errors import ServerError
from server.workers.batch_io import nbytes, select_outputs
from server.workers.ring import RingReader, RingWriter
from server.workers.shm import Receiver, Segment, decode, encode

# What a BLS call yields: (outputs [(name, dtype, shape, bytes)] | None, error (class, message) |
# None, parameters, final)
READINESS_POLL_S = 0.25  # how often the model's own is_ready() is asked
CallItem = tuple[list[tuple[str, str, list[int], bytes]] | None, tuple[str, str] | None, dict[str, Any], bool]


class WorkerControl(RequestControl):
    __slots__ = ("deadline_ns", "side", "slot")

    def __init__(self, side: WorkerSide, slot: int, deadline_ns: int, streamed: bool) -> None:
        super().__init__(streamed)
        self.side = side
        self.slot = slot
        self.deadline_ns = deadline_ns

    def is_cancelled(self) -> bool:
        if self.slot >= 0 and self.side.board[self.slot]:
            return True
        return bool(self.deadline_ns) and time.monotonic_ns() > self.deadline_ns

    def send(self, outputs: RequestOutputs | ServerError | None, final: bool) -> None:
        if not self.streamed:
            super().send(outputs, final)
            return
        self.finished = self.finished or final
        self.side.send_response(self.slot, self.streamed_request(final), outputs, final)


class WorkerSide:
    def __init__(self, board_fd: int, sock_fd: int) -> None:
        self._board = Segment.attach(board_fd)
        self.board = self._board.view
        self.sock = socket.socket(fileno=sock_fd)
        self.sock.setblocking(True)
        self._to_main = RingWriter(f"side_{os.getpid()}")
        self._from_main = RingReader()
        self._calls: dict[int, CallAnswers] = {}
        self._call_ids = itertools.count(1)
        self.executing = -1  # seq of the batch in execute() (worker.py), -1 between batches
        self._receiver = Receiver(self.sock)
        self._reading = threading.Lock()  # held by the caller reading replies (CallAnswers.get)

    def close(self) -> None:
        """The instance ended: its side socket, board and rings go now. In a shared host the
        process lives on, and leaving them to the collector cost a ResourceWarning (its message
        formatted whether shown or not) and a close per unload."""
        self.sock.close()
        self._board.close()
        self._to_main.close()
        self._from_main.close()

    def control(self, raw: dict[str, Any], request: Request) -> WorkerControl:
        control = WorkerControl(self, int(raw.get("k", -1)), int(raw.get("dl", 0)), "s" in raw)
        control.attach(request)
        return control

    # -- sending -----------------------------------------------------------------------------------

    def _send(self, body: dict[str, Any], pieces: list[tuple[list[Any], Any]]) -> None:
        """Write `pieces` ([name, dtype, shape] + data) into the ring and send `body` naming them."""
        writer = self._to_main
        with writer.lock:
            offsets, head, fds = writer.reserve([nbytes(data) for _, data in pieces])
            entries = []
            for (head_fields, data), offset in zip(pieces, offsets, strict=True):
                size = nbytes(data)
                if size:
                    writer.write(offset, data)
                entries.append([*head_fields, offset, size])
            if "o" in body:
                body["o"] = entries
            elif "i" in body:
                body["i"] = entries
            body["h"] = head
            message = encode(body)
            if fds:
                socket.send_fds(self.sock, [message], fds)
            else:
                self.sock.send(message)

    def send_response(
        self, slot: int, request: Request, outputs: RequestOutputs | ServerError | None, final: bool
    ) -> None:
        body: dict[str, Any] = {"op": "resp", "s": slot, "f": int(final)}
        pieces: list[tuple[list[Any], Any]] = []
        if isinstance(outputs, dict):
            try:
                selected = select_outputs(request, outputs)
            except ServerError as exc:
                outputs = exc
            else:
                body["o"] = None
                pieces = [([name, datatype, shape], data) for name, datatype, shape, data in selected]
                parameters = getattr(outputs, "parameters", None)
                if parameters:
                    body["p"] = parameters
        if isinstance(outputs, ServerError):
            body["e"] = list(outputs.to_wire())
        self._send(body, pieces)

    # -- custom metrics ------------------------------------------------------------------------------

    def watch_readiness(self, is_ready: Any, board_slots: int) -> None:
        """Poll the model's own `is_ready()` and keep its answer on the board's last byte."""

        def poll() -> None:
            while True:
                try:
                    ready = bool(is_ready())
                except Exception:  # a failing is_ready() means not ready
                    ready = False
                try:
                    self.board[board_slots] = 0 if ready else 1
                except (ValueError, IndexError):  # the board is gone: the worker is ending
                    return
                time.sleep(READINESS_POLL_S)

        threading.Thread(target=poll, name="is-ready", daemon=True).start()

    def connect_metrics(self, values: Any) -> None:
        """Forward the model's metric registrations (custom_metrics.MetricValues) to the server;
        the first carries the descriptor of the memory holding the values."""
        pending_fd = [values.fd]

        def forward(record: dict[str, Any]) -> None:
            message = encode({"op": "metric", **record})
            with self._to_main.lock:
                if pending_fd:
                    socket.send_fds(self.sock, [message], pending_fd)
                    pending_fd.clear()
                else:
                    self.sock.send(message)

        values.connect(forward)

    # -- BLS -----------------------------------------------------------------------------------------

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
    ) -> tuple[int, CallAnswers]:
        """Send a call; `get()` on the returned answers gives them one by one (the last final)."""
        call_id = next(self._call_ids)
        answers = CallAnswers(self)
        self._calls[call_id] = answers
        body: dict[str, Any] = {
            "op": "call",
            "c": call_id,
            "m": model,
            "v": version if version > 0 else "",
            "id": request_id,
            "i": None,
            "out": outputs,
            "p": parameters,
            "t": timeout_us,
            "d": int(decoupled),
            # the batch in execute() now: the server knows which requests wait on this call
            "b": self.executing,
        }
        try:
            self._send(body, [([name, dtype, shape], data) for name, dtype, shape, data in inputs])
        except OSError as exc:
            self._calls.pop(call_id, None)
            answers.put((None, ("ServerError", f"the server is gone ({exc})"), {}, True))
        return call_id, answers

    def uncall(self, call_id: int) -> None:
        """Cancel a call (a decoupled call's iterator was cancelled)."""
        with contextlib.suppress(OSError):
            self.sock.send(encode({"op": "uncall", "c": call_id}))

    # Replies are read by the waiting callers themselves, one at a time (leader/follower): no
    # reader thread, so an answer wakes the thread that waits for it and no other.

    def read_replies(self, until: CallAnswers) -> None:
        """As the reading caller: read replies until `until` has one, then hand the reading over."""
        try:
            while not until.ready():
                self._read_one()
        finally:
            self._reading.release()
            for waiting in list(self._calls.values()):  # a waiting caller takes over the reading
                if waiting is not until and not waiting.ready():
                    waiting.put(LEAD)
                    break

    def _read_one(self) -> None:
        try:
            received = self._receiver.receive()
        except (OSError, ValueError):
            received = None
        if received is None:  # the main process is gone: fail every call waiting
            for answers in list(self._calls.values()):
                answers.put((None, ("ServerError", "the server closed the connection"), {}, True))
            self._calls.clear()
            return
        message, fds = received
        self._from_main.attach(fds)
        record = decode(message)
        if record.get("op") != "reply":
            return
        read = self._from_main.read
        outputs = None
        if record.get("o") is not None:
            outputs = [
                (name, dtype, shape, read(offset, size)) for name, dtype, shape, offset, size in record["o"]
            ]
        self._from_main.consumed(int(record["h"]))
        error = record.get("e")
        final = bool(record.get("f"))
        call_id = int(record["c"])
        waiting = self._calls.pop(call_id, None) if final else self._calls.get(call_id)
        if waiting is not None:
            waiting.put((outputs, (error[0], error[1]) if error else None, record.get("p") or {}, final))


LEAD: CallItem = (None, None, {}, False)  # not an answer: "read the socket now" (identity-compared)


class CallAnswers:
    """The answers of one BLS call; `get()` waits for the next, reading the socket if nobody does."""

    def __init__(self, side: WorkerSide) -> None:
        self._side = side
        self._items: queue.SimpleQueue[CallItem] = queue.SimpleQueue()
        # Answers put (only by the caller holding the reading lock) and taken (only by the owner):
        # one writer each, so no lock.
        self._put = 0
        self._taken = 0

    def put(self, item: CallItem) -> None:
        if item is not LEAD:
            self._put += 1
        self._items.put(item)

    def ready(self) -> bool:
        return self._put > self._taken

    def get(self) -> CallItem:
        side = self._side
        while True:
            if not self.ready() and side._reading.acquire(blocking=False):
                side.read_replies(self)
            item = self._items.get()
            if item is LEAD:
                continue  # the reader handed over: read if still nothing came
            self._taken += 1
            return item
