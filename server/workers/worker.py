"""The loop inside a worker process: load the backend, then execute batches until told to stop.

Runs single-threaded and blocking (one batch at a time; the main process may queue the next one
in the other arena slot meanwhile). The record formats are described in shm_channel.py.
"""

from __future__ import annotations

import base64
import os
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from server.backends.base import (
    Backend,
    BackendContext,
    Batch,
    BatchInput,
    Request,
    RequestInput,
    RequestOutputs,
)
from server.core.dtypes import WIRE_TO_NUMPY, numpy_to_wire, serialize_bytes
from server.errors import BackendError, LoadError, ServerError
from server.workers.shm import Receiver, Segment, align, decode, encode, send, spill_size, spilled_arena

PARENT_POLL_S = 0.5
_WIRE_BY_DTYPE = {dtype: name for name, dtype in WIRE_TO_NUMPY.items() if name not in ("BF16", "BYTES")}


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
            self.backend = _create_backend(init)
            self.backend.load()
        except BaseException as exc:  # any failure of user code is a load error
            detail = exc.message if isinstance(exc, ServerError) else f"{type(exc).__name__}: {exc}"
            if init.get("log_verbose", 0):
                traceback.print_exc()
            send(self.sock, encode({"op": "load_failed", "error": ["LoadError", detail]}))
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
            if fds:
                self._replace(self.in_slots, int(record["slot"]), fds)
            if record["op"] == "close":
                self._unload()
                send(self.sock, encode({"op": "closed"}))
                return
            if record["op"] == "exec":
                self._execute(record, received_ns)

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
        batch = self._build_batch(record, self.in_slots[slot])
        built_ns = time.monotonic_ns()
        try:
            results = self.backend.execute(batch)
            if len(results) != len(batch.requests):
                raise BackendError(
                    f"the model returned {len(results)} responses for {len(batch.requests)} requests"
                )
        except ServerError as exc:
            results = [exc] * len(batch.requests)
        except Exception as exc:  # user code: report, keep serving
            error = BackendError(
                f"Failed to process the request(s) for model instance "
                f"'{self.backend.context.instance_name}', message: {type(exc).__name__}: {exc}"
            )
            results = [error] * len(batch.requests)
        executed_ns = time.monotonic_ns()

        entries, copies, needed = _plan_outputs(batch, results)
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
            _copy_into(segment.view[position : position + _nbytes(data)], data)
        reply["t"][2] = time.monotonic_ns() - executed_ns
        send(self.sock, encode(reply, segment, slot, needed), fds)

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
            Request(
                id=raw.get("id", ""),
                inputs={},
                requested_outputs=raw.get("outputs") or self.all_outputs,
                parameters=raw.get("params") or {},
                explicit_outputs=bool(raw.get("outputs")),
            )
            for raw in raw_requests
        ]
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
    batch: Batch, results: list[RequestOutputs | ServerError]
) -> tuple[list[dict[str, Any]], list[tuple[int, Any]], int]:
    """Reply entries with arena offsets, the (offset, data) copies to make, and the bytes needed."""
    entries: list[dict[str, Any]] = []
    copies: list[tuple[int, Any]] = []
    position = 0
    for request, result in zip(batch.requests, results, strict=True):
        try:
            if isinstance(result, ServerError):
                raise result
            tensors = _select_outputs(request, result)
        except ServerError as exc:
            entries.append({"e": list(exc.to_wire())})
            continue
        outputs = []
        for name, datatype, shape, data in tensors:
            size = _nbytes(data)
            outputs.append([name, datatype, shape, position, size])
            if size:
                copies.append((position, data))
            position += align(size)
        entry: dict[str, Any] = {"o": outputs}
        parameters = getattr(result, "parameters", None)
        if parameters:
            entry["p"] = parameters
        entries.append(entry)
    return entries, copies, position


def _select_outputs(request: Request, outputs: RequestOutputs) -> list[tuple[str, str, list[int], Any]]:
    """(name, wire datatype, shape, array-or-bytes) for each output the request asked for."""
    selected = []
    names = request.requested_outputs
    if not request.explicit_outputs:  # configured order first, then anything else the model made
        names = [name for name in names if name in outputs] + [name for name in outputs if name not in names]
    for name in names:
        output = outputs.get(name)
        if output is None:
            raise BackendError(f"the model did not produce the requested output '{name}'")
        array = output.array
        datatype = output.datatype or _WIRE_BY_DTYPE.get(array.dtype)
        if datatype is None:
            try:
                datatype = numpy_to_wire(array.dtype)
            except ServerError as exc:
                raise BackendError(f"output '{name}': {exc.message}") from None
        shape = [int(dim) for dim in array.shape]
        data: Any = serialize_bytes(array) if datatype == "BYTES" else np.ascontiguousarray(array)
        selected.append((name, datatype, shape, data))
    return selected


def _nbytes(data: Any) -> int:
    return len(data) if isinstance(data, bytes) else int(data.nbytes)


def _copy_into(target: memoryview, data: Any) -> None:
    if isinstance(data, bytes):
        target[:] = data
    else:
        target[:] = data.reshape(-1).view(np.uint8)


def _create_backend(init: dict[str, Any]) -> Backend:
    from server.backends import create_backend
    from server.backends.config_proto import model_config_pb2

    config = model_config_pb2().ModelConfig()
    config.ParseFromString(base64.b64decode(init["config"]))
    instance = init["instance"]
    context = BackendContext(
        model_name=init["model_name"],
        version=int(init["version"]),
        model_dir=Path(init["model_dir"]),
        config=config,
        instance_name=instance["name"],
        instance_kind=instance["kind"],
        device_id=instance["device_id"],
        backend_parameters=init.get("backend_parameters", {}),
        log_verbose=int(init.get("log_verbose", 0)),
        config_json=init.get("config_json", ""),
        auto_complete=bool(init.get("auto_complete", True)),
    )
    backend = create_backend(init["backend"], context)
    if backend is None:
        raise LoadError(
            f"model '{context.model_name}' names backend '{init['backend']}', which tritonctl lacks"
        )
    return backend


def _watch_parent(parent_pid: int) -> None:
    """Exit when the main process dies, even while a long batch runs (the socket EOF covers idle)."""

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
