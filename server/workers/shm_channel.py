"""ShmWorkerChannel: the production WorkerChannel, one worker process per model instance.

Hot path of one batch (`submit`):
  main   writes each input once into the slot's input arena: for every input name the requests'
         bytes back to back in request order; sends a small control record over the socket;
  worker views the concatenation zero-copy (np.frombuffer), executes, writes each requested output
         once into the slot's output arena, replies with offsets;
  main   copies each output once out of the arena into the InferenceResult.

Up to `max_in_flight` batches (default 2) are outstanding: batch k uses slot k % max_in_flight, so
the main process writes batch k+1 while the worker computes batch k. The worker answers in order,
and a slot is reused only after its previous batch's answer has been copied out.

Control records (orjson; tensor bytes never travel in them, nothing is pickled):
  init   {"op":"init", model_name, version, model_dir, backend, config (base64 ModelConfig),
          config_json, instance {name, kind, device_id}, backend_parameters, log_verbose,
          auto_complete, in_process (false here), slots, shm_default_size, shm_growth_size, parent_pid}
         (backend_loading.py writes all but the last four; inprocess.py uses the same record)
  ready  {"op":"ready", pid, config_json?}     load_failed {"op":"load_failed", "error": [class, message]}
  exec   {"op":"exec", seq, slot, requests: [{id, outputs: [names]|null, params?}],
          inputs: [{name, dtype, shapes: [shape|null per request], offset, sizes: [bytes per request]}],
          "in"?, "nfd"?, "bad"?: inputs the worker reads from clients' shared-memory regions into
          the arena itself, whose descriptors follow the arena's (client_inputs.py),
          "shm"?: [[request index, output, position, byte size]]: outputs the worker writes into
          clients' shared-memory regions, whose descriptors come last (client_outputs.py)}
  done   {"op":"done", seq, t: [compute_input_ns, compute_infer_ns, compute_output_ns],
          results: [{"o": [[name, dtype, shape, offset, size], ...], "p"?: params, "w"?: [written]}
                    | {"e": [class, message], "r"?: 1 (ServerError.model_response)}]}
  close  {"op":"close"} -> {"op":"closed"}, then the worker exits
A new, larger arena segment travels as a file descriptor with the exec (input) or done (output)
message that first uses it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import socket
import subprocess
import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any

from server.errors import RequestRescheduled, ServerError, WorkerCrashed, from_wire
from server.vocabulary.eager import EagerFuture
from server.vocabulary.types import InferenceRequest, InferenceResult, Tensor
from server.workers.batch_io import scalar_parameters
from server.workers.channel import BatchOutcome, WorkerChannel
from server.workers.client_inputs import Sourced, attach_inputs, detach_inputs, read_in_main, spill_reserve
from server.workers.client_inputs import release as release_inputs
from server.workers.client_outputs import attach, direct_targets, mark_written
from server.workers.settings import WorkerOptions
from server.workers.shm import Receiver, Segment, align, decode, encode, spill_size
from server.workers.side import SideLink

_LIVE_PROCESSES: weakref.WeakSet[subprocess.Popen[bytes]] = weakref.WeakSet()
# How long a worker whose socket closed may take to report its exit status before we name the
# closed socket instead: it is usually microseconds, but a loaded machine stretches it.
EXIT_STATUS_GRACE_S = 2.0


@atexit.register
def _kill_leftover_workers() -> None:
    """Last resort when the main process exits without closing its channels."""
    for process in list(_LIVE_PROCESSES):
        if process.poll() is None:
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)


@dataclass(slots=True)
class _InFlight:
    seq: int
    slot: int
    requests: list[InferenceRequest]
    future: asyncio.Future[BatchOutcome]
    compute_input_ns: int
    slots: list[int]  # each request's cancel-board slot (side.py)


class ShmWorkerChannel(WorkerChannel):
    """A live worker process; build it with `server.workers.supervisor.start_worker`."""

    def __init__(
        self,
        *,
        model_name: str,
        version: int,
        instance_name: str,
        process: subprocess.Popen[bytes],
        sock: socket.socket,
        options: WorkerOptions,
    ) -> None:
        self.model_name = model_name
        self.version = version
        self.instance_name = instance_name
        self.process = process
        self._version_text = str(version)
        self._sock = sock
        self._receiver = Receiver(sock)
        self._options = options
        self._slot_count = self.max_in_flight = max(1, options.max_in_flight)
        self._in_slots: list[Segment | None] = [None] * self._slot_count
        self._out_slots: list[Segment | None] = [None] * self._slot_count
        self._slots_free = asyncio.Semaphore(self._slot_count)
        self._in_flight: deque[_InFlight] = deque()
        self._seq = 0
        self._alive = True
        self._closing = False
        self._loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[str] = self._loop.create_future()  # resolves with the reason
        self._side: SideLink | None = None  # streams, cancellation, BLS (side.py)
        _LIVE_PROCESSES.add(process)

    @property
    def alive(self) -> bool:
        return self._alive

    @property
    def model_ready(self) -> bool:
        """The model's own is_ready(), as the worker last wrote it on the cancel board (side.py)."""
        return self._side is None or self._side.model_ready

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def batches_in_flight(self) -> int:
        """Batches sent to the worker (inputs in an arena slot) and not yet answered."""
        return len(self._in_flight)

    def start_reading(self) -> None:
        self._loop.add_reader(self._sock.fileno(), self._on_readable)
        self._side = SideLink(self.model_name, self.version, self.instance_name, self._batch_callers)
        message, fds = self._side.handover()
        self._send(message, fds)
        self._side.handed_over()

    # -- submit -------------------------------------------------------------------------------------

    async def submit(self, requests: list[InferenceRequest]) -> BatchOutcome:
        if not requests:
            return BatchOutcome(results=[])
        await self._slots_free.acquire()
        # From here the answer (or the crash) frees the slot, even if this caller is cancelled.
        return await asyncio.shield(self._send_batch(requests))

    def submit_now(self, requests: list[InferenceRequest]) -> asyncio.Future[BatchOutcome] | None:
        # The scheduler's pool lends no more batches than there are slots, so one is free here but
        # while the channel closes. Taken as Semaphore.acquire() takes it when it need not wait.
        if not requests or not self._alive or self._slots_free.locked():
            return None
        self._slots_free._value -= 1
        return self._send_batch(requests)

    def _send_batch(self, requests: list[InferenceRequest]) -> asyncio.Future[BatchOutcome]:
        """Write and send a batch into the slot already taken; the future of its outcome."""
        try:
            if not self._alive:
                raise WorkerCrashed(
                    f"instance '{self.instance_name}' of model '{self.model_name}' is not running"
                )
            started = time.monotonic_ns()
            seq = self._seq
            self._seq += 1
            slot = seq % self._slot_count
            side = self._side
            slots = [side.admit(request) for request in requests] if side is not None else []
            message, fds, sourced = self._write_batch(seq, slot, requests, slots)
            # Eager: the answer's callbacks run as it is read, not a loop step later.
            future: asyncio.Future[BatchOutcome] = EagerFuture(loop=self._loop)
            self._in_flight.append(
                _InFlight(seq, slot, requests, future, time.monotonic_ns() - started, slots)
            )
            self._send(message, fds)
            if sourced:  # the worker holds its own descriptors of the clients' regions now
                release_inputs(sourced)
            if fds:  # a new arena's descriptor went with it: the map alone keeps the memory here
                for segment in self._in_slots:
                    if segment is not None and segment.fd in fds:
                        segment.drop_fd()
        except BaseException:
            if not self._in_flight or self._in_flight[-1].requests is not requests:
                self._slots_free.release()
            raise
        return future

    def _batch_callers(self, seq: int) -> tuple[str, ...]:
        """The BLS chain of a batch in flight: what its requests' own callers were (side.py)."""
        for batch in self._in_flight:
            if batch.seq == seq:
                return tuple(dict.fromkeys(c for request in batch.requests for c in request.callers))
        return ()

    def _send(self, message: bytes, fds: list[int]) -> None:
        try:
            if fds:
                socket.send_fds(self._sock, [message], fds)
            else:
                self._sock.send(message)
        except BlockingIOError:
            # The socket buffer holds far more than `max_in_flight` records; a full one means the
            # worker stopped reading. Treat it like a crash rather than block the event loop.
            self._on_worker_gone("stopped reading its control socket")
        except OSError:  # the worker is gone: its exit status, not this send, says why
            self._on_worker_gone(None)

    def _write_batch(
        self, seq: int, slot: int, requests: list[InferenceRequest], slots: list[int]
    ) -> tuple[bytes, list[int], list[Sourced]]:
        by_request = [{tensor.name: tensor for tensor in request.inputs} for request in requests]
        names: list[str] = []
        for request in requests:
            names.extend(tensor.name for tensor in request.inputs if tensor.name not in names)

        input_entries: list[dict[str, Any]] = []
        pieces: list[tuple[int, memoryview | bytes | bytearray]] = []
        sourced: list[Sourced] = []  # inputs still in clients' regions (client_inputs.py)
        position = 0
        for name in names:
            shapes: list[list[int] | None] = []
            sizes: list[int] = []
            offset = position
            datatype = ""
            for index, tensors in enumerate(by_request):
                tensor = tensors.get(name)
                if tensor is None:
                    shapes.append(None)
                    sizes.append(0)
                    continue
                datatype = tensor.datatype
                shapes.append(list(tensor.shape))
                source = tensor.source
                if source is not None:
                    sourced.append((position, index, name, source))
                    sizes.append(source.byte_size)
                    position += source.byte_size
                    continue
                data = tensor.data
                if isinstance(data, memoryview) and (data.format != "B" or data.ndim != 1):
                    data = data.cast("B")
                pieces.append((position, data))
                sizes.append(len(data))
                position += len(data)
            input_entries.append(
                {"name": name, "dtype": datatype, "shapes": shapes, "offset": offset, "sizes": sizes}
            )
            position = align(position)

        record: dict[str, Any] = {
            "op": "exec",
            "seq": seq,
            "slot": slot,
            "requests": [
                _request_record(request, slots[index] if slots else -1)
                for index, request in enumerate(requests)
            ],
            "inputs": input_entries,
        }
        region_fds = attach_inputs(record, sourced) if sourced else []  # the worker reads them
        main_reads = sourced if sourced and not region_fds else []
        direct = direct_targets(requests)  # outputs the worker writes into clients' regions
        if direct:
            region_fds += attach(record, direct)
        spill = spill_size(record)
        if region_fds and spill:  # a spilled record cannot carry descriptors
            record.pop("shm", None)
            detach_inputs(record)
            region_fds, main_reads = [], sourced
        if main_reads:  # room for the "bad" entries they may add
            spill = spill_size({**record, **spill_reserve(main_reads)})
        needed = position + spill
        segment, fds = self._input_segment(slot, needed)
        if segment is not None:
            view = segment.view
            for start, data in pieces:
                view[start : start + len(data)] = data
            if main_reads:
                read_in_main(view, record, main_reads)
        return encode(record, segment, slot, position), fds + region_fds, sourced

    def _input_segment(self, slot: int, needed: int) -> tuple[Segment | None, list[int]]:
        segment = self._in_slots[slot]
        if needed == 0 or (segment is not None and segment.size >= needed):
            return segment, []
        if segment is None:
            size = max(needed, self._options.shm_default_size)
        else:
            size = max(needed, segment.size + self._options.shm_growth_size)
            segment.close()
        segment = self._in_slots[slot] = Segment.create(f"in{slot}_{self.instance_name}", size)
        return segment, [segment.fd]

    # -- answers ----------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        while self._alive:
            try:
                received = self._receiver.receive()
            except BlockingIOError:
                return
            except (OSError, ValueError) as exc:
                self._on_worker_gone(f"sent an unreadable control message ({exc})")
                return
            if received is None:
                self._on_worker_gone(None)
                return
            message, fds = received
            if not self._in_flight:
                for fd in fds:
                    os.close(fd)
                continue  # e.g. "closed" after a close request
            batch = self._in_flight.popleft()
            if fds:
                old = self._out_slots[batch.slot]
                if old is not None:
                    old.close()
                self._out_slots[batch.slot] = Segment.attach(fds[0])
            try:
                record = decode(message, self._out_slots)
                outcome = self._read_outcome(batch, record)
            except (ValueError, KeyError, TypeError) as exc:
                self._in_flight.appendleft(batch)
                self._on_worker_gone(f"sent a malformed answer ({exc})")
                return
            side = self._side
            if side is not None and batch.slots:
                for request, board, result in zip(batch.requests, batch.slots, outcome.results, strict=True):
                    side.answered(request, board, isinstance(result, RequestRescheduled))
            self._slots_free.release()  # before the answer's eager callbacks, which may send again
            if not batch.future.done():
                batch.future.set_result(outcome)

    def _read_outcome(self, batch: _InFlight, record: dict[str, Any]) -> BatchOutcome:
        started = time.monotonic_ns()
        segment = self._out_slots[batch.slot]
        view = segment.view if segment is not None else memoryview(b"")
        results: list[InferenceResult | ServerError] = []
        for request, entry in zip(batch.requests, record["results"], strict=True):
            error = entry.get("e")
            if error is not None:
                rebuilt = from_wire(error[0], error[1])
                rebuilt.model_response = "r" in entry
                results.append(rebuilt)
                continue
            outputs = [
                Tensor(name, datatype, shape, bytes(view[offset : offset + size]))
                for name, datatype, shape, offset, size in entry["o"]
            ]
            if "w" in entry:  # written into the client's region by the worker (client_outputs.py)
                mark_written(request, entry["w"])
            results.append(
                InferenceResult(
                    model=request.model or self.model_name,
                    version=self._version_text,
                    outputs=outputs,
                    id=request.id,
                    parameters=entry.get("p") or {},
                )
            )
        compute_input, compute_infer, compute_output = record["t"]
        return BatchOutcome(
            results=results,
            compute_input_ns=batch.compute_input_ns + compute_input,
            compute_infer_ns=compute_infer,
            compute_output_ns=compute_output + time.monotonic_ns() - started,
        )

    # -- end of life ------------------------------------------------------------------------------

    def _on_worker_gone(self, why: str | None) -> None:
        """The process died (why None: its socket closed, and its exit status will say why) or
        broke the protocol (why says how): fail what is in flight, promptly."""
        if not self._alive:
            return
        self._alive = False
        self._loop.remove_reader(self._sock.fileno())
        if why is not None and self.process.poll() is None:
            self.process.kill()
        self._loop.create_task(self._finish_exit(why))

    async def _finish_exit(self, why: str | None) -> None:
        if why is None:  # the socket closes as the process exits; its exit status follows a moment later
            returncode = await wait_for_exit(self.process, EXIT_STATUS_GRACE_S)
            why = _describe_exit(returncode) if returncode is not None else "closed its control socket"
        reason = why
        in_flight = list(self._in_flight)
        self._in_flight.clear()
        count = sum(len(batch.requests) for batch in in_flight)
        if self._side is not None:  # streams end, the model's BLS calls are cancelled
            self._side.fail_all(
                WorkerCrashed(f"instance '{self.instance_name}' of model '{self.model_name}' {reason}")
            )
        for batch in in_flight:
            if not batch.future.done():
                batch.future.set_exception(
                    WorkerCrashed(
                        f"instance '{self.instance_name}' of model '{self.model_name}' (pid {self.pid}) "
                        f"{reason} while executing {count} request(s)"
                    )
                )
            self._slots_free.release()
        self._release_resources()
        if self.process.poll() is None:  # closed its socket but lingers: do not leave it behind
            self.process.kill()
            await self._loop.run_in_executor(None, self.process.wait)
        if not self.exited.done():
            self.exited.set_result("closed" if self._closing else reason)

    def _release_resources(self) -> None:
        for segment in (*self._in_slots, *self._out_slots):
            if segment is not None:
                segment.close()
        self._in_slots = [None] * self._slot_count
        self._out_slots = [None] * self._slot_count
        self._sock.close()
        if self._side is not None:
            self._side.close()
        _LIVE_PROCESSES.discard(self.process)

    def kill(self) -> None:
        """SIGKILL the process; its closed socket then fails the batches in flight (WorkerCrashed)."""
        if self.process.poll() is None:
            self.process.kill()

    async def close(self, timeout_s: float = 30.0) -> None:
        """Finish the batches in flight, let the model finalize, then stop the process."""
        if self._closing:
            await asyncio.shield(self.exited)
            return
        self._closing = True
        if self._alive:
            for _ in range(self._slot_count):  # wait for the batches in flight
                await self._slots_free.acquire()
            if self._alive:
                self._send(encode({"op": "close"}), [])
            try:
                await asyncio.wait_for(asyncio.shield(self.exited), timeout_s)
            except TimeoutError:
                self.process.kill()
                self._on_worker_gone("did not finalize in time and was killed")
                await asyncio.shield(self.exited)
        else:
            await asyncio.shield(self.exited)


def _request_record(request: InferenceRequest, board: int) -> dict[str, Any]:
    record: dict[str, Any] = {"id": request.id, "outputs": [o.name for o in request.outputs] or None}
    if request.parameters:
        parameters = record["params"] = scalar_parameters(request.parameters)
        timeout_us = parameters.get("timeout")
        if isinstance(timeout_us, int) and timeout_us > 0:  # is_cancelled() after it (CLOCK_MONOTONIC)
            record["dl"] = request.arrival_ns + timeout_us * 1000
    if board >= 0:
        record["k"] = board
    if request.stream is not None:
        record["s"] = 1  # decoupled: responses go out on the side link, in board slot k
    return record


async def wait_for_exit(process: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    """The process's exit status, waiting up to `timeout_s` for it; None if it still runs.

    Wakes the moment it exits (a pidfd is readable then); polls only where pidfds are missing."""
    if process.poll() is not None or timeout_s <= 0:
        return process.returncode
    wait_exit = getattr(process, "wait_exit", None)  # an instance of a shared host (host.py)
    if wait_exit is not None:
        return await wait_exit(timeout_s)  # type: ignore[no-any-return]
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(process.pid)
    except (AttributeError, OSError):  # not Linux >= 5.3
        deadline = loop.time() + timeout_s
        while process.poll() is None and loop.time() < deadline:
            await asyncio.sleep(0.01)
        return process.returncode
    exited: asyncio.Future[None] = loop.create_future()

    def on_exit() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, on_exit)
    try:
        await asyncio.wait_for(exited, timeout_s)
    except TimeoutError:
        pass
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    return process.poll()


def _describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "stopped answering"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"
