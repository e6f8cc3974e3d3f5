"""The loop inside a worker process: load the backend, then execute batches until told to stop.

Runs single-threaded and blocking (one batch at a time; the main process may queue the next one
in the other arena slot meanwhile). The record formats are described in shm_channel.py.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import traceback
from typing import Any

import numpy as np

from server.backends.base import Backend, Batch, BatchInput, RequestInput
from server.errors import LoadError, ServerError
from server.workers.backend_loading import load_backend
from server.workers.batch_io import (
    SelectedOutputs,
    backend_request,
    execute_batch,
    nbytes,
    select_results,
)
from server.workers.client_inputs import execute_without, read_inputs
from server.workers.client_outputs import write_direct
from server.workers.shm import Receiver, Segment, align, decode, encode, send, spill_size, spilled_arena
from server.workers.worker_side import WorkerSide

PARENT_POLL_S = 0.5


class Worker:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.receiver = Receiver(sock)
        self.backend: Backend | None = None
        self.in_slots: list[Segment | None] = []
        self.out_slots: list[Segment | None] = []
        self.default_size = 0
        self.growth_size = 0
        self.all_outputs: list[str] = []
        self.side: WorkerSide | None = None

    # -- start-up ---------------------------------------------------------------------------------

    def start(self) -> bool:
        """Read the init record and load the backend; False when loading failed (reported already)."""
        received = self.receiver.receive()
        if received is None:
            return False
        message, fds = received
        for fd in fds:
            os.close(fd)
        init = decode(message)
        slots = int(init["slots"])
        self.in_slots = [None] * slots
        self.out_slots = [None] * slots
        self.default_size = int(init["shm_default_size"])
        self.growth_size = int(init["shm_growth_size"])
        _watch_parent(int(init["parent_pid"]))
        try:
            self.backend = load_backend(init)
        except LoadError as exc:
            send(self.sock, encode({"op": "load_failed", "error": ["LoadError", exc.message]}))
            return False
        self.all_outputs = self.backend.output_names()
        ready: dict[str, Any] = {"op": "ready", "pid": os.getpid()}
        completed_json = getattr(self.backend, "completed_config_json", None)
        if completed_json is not None:
            ready["config_json"] = completed_json
        send(self.sock, encode(ready))
        return True

    # -- the loop ---------------------------------------------------------------------------------

    def serve(self) -> None:
        while True:
            received = self.receiver.receive()
            if received is None:
                return  # the main process is gone
            message, fds = received
            received_ns = time.monotonic_ns()
            spilled_slot = spilled_arena(message)
            if spilled_slot is not None and fds:
                self._replace(self.in_slots, spilled_slot, fds)  # the spill lies in the new segment
                fds = []
            record = decode(message, self.in_slots)
            if record["op"] == "side":  # the side link (side.py): cancel board and side socket
                self._attach_side(fds, int(record["slots"]))
                continue
            # clients' regions ride after the arena: inputs' (client_inputs.py), outputs' (client_outputs.py)
            regions = record.get("nfd", 0) + len(record.get("shm", ()))
            region_fds = fds[len(fds) - regions :] if regions else []
            fds = fds[: len(fds) - regions]
            if fds:
                self._replace(self.in_slots, int(record["slot"]), fds)
            if region_fds:
                record["shm_fds"] = region_fds
            if record["op"] == "close":
                self._unload()
                send(self.sock, encode({"op": "closed"}))
                return
            if record["op"] == "exec":
                self._execute(record, received_ns)

    def close(self) -> None:
        """Release the side link and the arenas (a hosted instance's thread ends, its host lives)."""
        if self.side is not None:
            self.side.close()
            self.side = None
        for slot in (*self.in_slots, *self.out_slots):
            if slot is not None:
                slot.close()
        self.in_slots = [None] * len(self.in_slots)
        self.out_slots = [None] * len(self.out_slots)

    def _attach_side(self, fds: list[int], board_slots: int) -> None:
        self.side = WorkerSide(fds[0], fds[1])
        if self.backend is not None:
            self.backend.upcalls = self.side
            values = getattr(self.backend, "metric_values", None)
            if values is not None:  # python models' custom metrics (workers/custom_metrics.py)
                self.side.connect_metrics(values)
            is_ready = getattr(self.backend, "model_is_ready", None)
            if is_ready is not None:  # a python model's own is_ready() (python_backend #430)
                self.side.watch_readiness(is_ready, board_slots)  # the byte after the slots

    @staticmethod
    def _replace(slots: list[Segment | None], slot: int, fds: list[int]) -> None:
        old = slots[slot]
        if old is not None:
            old.close()
        slots[slot] = Segment.attach(fds[0])
        for extra in fds[1:]:
            os.close(extra)

    def _execute(self, record: dict[str, Any], received_ns: int) -> None:
        assert self.backend is not None
        slot = int(record["slot"])
        region_fds: list[int] = record.get("shm_fds", [])
        input_fds, region_fds = region_fds[: record.get("nfd", 0)], region_fds[record.get("nfd", 0) :]
        arena = self.in_slots[slot]
        view = arena.view if arena is not None else memoryview(b"")
        failed = read_inputs(record, input_fds, view) if "in" in record or "bad" in record else {}
        batch = self._build_batch(record, arena)
        built_ns = time.monotonic_ns()
        side = self.side
        if side is not None:
            side.executing = int(record["seq"])  # BLS calls made now wait in this batch (callers)
        if failed:  # inputs a client truncated: those requests get their errors, the others run
            results = execute_without(self.backend, batch, failed)
        else:
            results = execute_batch(self.backend, batch)
        if side is not None:
            side.executing = -1
        executed_ns = time.monotonic_ns()

        selected = select_results(batch, results)
        try:
            written = write_direct(selected, record["shm"], region_fds) if region_fds else {}
        finally:
            for fd in region_fds:
                os.close(fd)
        entries, copies, needed = _plan_outputs(selected)
        for index, names in written.items():
            entries[index]["w"] = names
        reply: dict[str, Any] = {
            "op": "done",
            "seq": record["seq"],
            "results": entries,
            "t": [built_ns - received_ns, executed_ns - built_ns, 0],
        }
        spill = spill_size(reply)
        segment, fds = self._output_segment(slot, needed + spill)
        for position, data in copies:
            assert segment is not None
            _copy_into(segment.view[position : position + nbytes(data)], data)
        reply["t"][2] = time.monotonic_ns() - executed_ns
        send(self.sock, encode(reply, segment, slot, needed), fds)
        if fds and segment is not None:
            segment.drop_fd()  # the main process maps it now

    def _output_segment(self, slot: int, needed: int) -> tuple[Segment | None, list[int]]:
        """The slot's output arena, replaced by a larger one (whose fd goes with the reply) if needed."""
        segment = self.out_slots[slot]
        if needed == 0 or (segment is not None and segment.size >= needed):
            return segment, []
        if segment is None:
            size = max(needed, self.default_size)
        else:
            size = max(needed, segment.size + self.growth_size)
            segment.close()
        segment = self.out_slots[slot] = Segment.create(f"out{slot}_{os.getpid()}", size)
        return segment, [segment.fd]

    def _build_batch(self, record: dict[str, Any], arena: Segment | None) -> Batch:
        raw_requests: list[dict[str, Any]] = record["requests"]
        requests = [
            backend_request(raw.get("id", ""), raw.get("outputs"), raw.get("params"), self.all_outputs)
            for raw in raw_requests
        ]
        side = self.side
        if side is not None:
            for raw, request in zip(raw_requests, requests, strict=True):
                side.control(raw, request)
        inputs: dict[str, BatchInput] = {}
        view = arena.view if arena is not None else memoryview(b"")
        for entry in record["inputs"]:
            name, datatype = entry["name"], entry["dtype"]
            shapes: list[list[int] | None] = entry["shapes"]
            sizes: list[int] = entry["sizes"]
            position = start = int(entry["offset"])
            for request, shape, size in zip(requests, shapes, sizes, strict=True):
                if shape is not None:
                    request.inputs[name] = RequestInput(
                        name, datatype, shape, view[position : position + size]
                    )
                position += size
            complete = [shape for shape in shapes if shape is not None]
            if len(complete) == len(shapes):
                inputs[name] = BatchInput(name, datatype, complete, view[start:position])
        return Batch(requests, inputs)

    def _unload(self) -> None:
        if self.backend is not None:
            try:
                self.backend.unload()
            except Exception:  # finalize errors must not keep the process alive
                traceback.print_exc()


def _plan_outputs(
    selected: list[SelectedOutputs | ServerError],
) -> tuple[list[dict[str, Any]], list[tuple[int, Any]], int]:
    """Reply entries with arena offsets, the (offset, data) copies to make, and the bytes needed."""
    entries: list[dict[str, Any]] = []
    copies: list[tuple[int, Any]] = []
    position = 0
    for answer in selected:
        if isinstance(answer, ServerError):
            entries.append(
                {"e": list(answer.to_wire()), "r": 1}
                if answer.model_response
                else {"e": list(answer.to_wire())}
            )
            continue
        outputs = []
        for name, datatype, shape, data in answer.tensors:
            size = nbytes(data)
            outputs.append([name, datatype, shape, position, size])
            if size:
                copies.append((position, data))
            position += align(size)
        entry: dict[str, Any] = {"o": outputs}
        if answer.parameters:
            entry["p"] = answer.parameters
        entries.append(entry)
    return entries, copies, position


def _copy_into(target: memoryview, data: Any) -> None:
    if isinstance(data, bytes):
        target[:] = data
    else:
        target[:] = data.reshape(-1).view(np.uint8)


_WATCHED: set[int] = set()  # a shared host (host_process.py) runs many workers: one watcher


def _watch_parent(parent_pid: int) -> None:
    """Exit when the main process dies, even while a long batch runs (the socket EOF covers idle)."""
    if parent_pid in _WATCHED:
        return
    _WATCHED.add(parent_pid)

    def watch() -> None:
        while True:
            time.sleep(PARENT_POLL_S)
            if os.getppid() != parent_pid:
                os._exit(70)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def run(fd: int) -> int:
    sock = socket.socket(fileno=fd)
    worker = Worker(sock)
    if not worker.start():
        return 1
    try:
        worker.serve()
    finally:
        sys.stdout.flush()
    return 0
