"""InProcessChannel: a model instance living in the server's own process (issue #8).

Chosen per model with the `TRITONCTL_INSTANCE_MODE` parameter (server/repository/instance_mode.py):

- `inline`: `execute` runs synchronously on the event-loop thread. No worker hop at all, so the
  cheapest path for models whose execute takes microseconds (an identity, a lookup); while it
  runs, nothing else in the server does.
- `thread`: `execute` runs on the instance's own thread; the loop keeps serving meanwhile, and
  backends that release the GIL (onnxruntime, pytorch) compute in parallel with it.

Either way the backend loads and finalizes on the instance's thread, never on the loop. There is
no process boundary: a model that hangs holds its instance (inline: the whole server), one that
kills the interpreter (segfault, os._exit) takes the server down, and nothing restarts it.

No shared memory either: `submit` hands the backend views of the requests' own bytes (copied only
where read-only, since models may write into their inputs as they can in a worker's arena) and
turns its outputs into InferenceResults with the helpers the worker process uses (batch_io.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from server.backends.base import Backend, Batch, BatchInput, Request, RequestInput
from server.errors import LoadError, ServerError, WorkerCrashed
from server.repository.instance_mode import INLINE, THREAD, gpu_kind_problem, unknown_mode_problem
from server.vocabulary.instances import KIND_GPU
from server.vocabulary.types import InferenceRequest, InferenceResult, Tensor
from server.workers.backend_loading import InstanceLaunch, instance_record, load_backend
from server.workers.batch_io import (
    SelectedOutputs,
    backend_request,
    execute_batch,
    scalar_parameters,
    select_results,
    to_bytes,
)
from server.workers.channel import BatchOutcome, WorkerChannel
from server.workers.inprocess_side import InProcessUpcalls, attach_control
from server.workers.settings import WorkerOptions

log = logging.getLogger(__name__)
T = TypeVar("T")


class _InstanceThread:
    """One daemon thread that runs an instance's calls in order (load, executes, finalize).

    A daemon, unlike a ThreadPoolExecutor's worker: a model stuck in user code cannot keep the
    server from exiting."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.get_running_loop()
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def call(self, function: Callable[[], T]) -> asyncio.Future[T]:
        future: asyncio.Future[T] = self._loop.create_future()
        self._calls.put((function, future))
        return future

    def stop(self) -> None:
        """Let the thread end after the calls queued so far."""
        self._calls.put(None)

    def _run(self) -> None:
        while (item := self._calls.get()) is not None:
            function, future = item
            try:
                outcome: tuple[Any, BaseException | None] = (function(), None)
            except BaseException as exc:  # user code: SystemExit included, the thread must go on
                outcome = (None, exc)
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
                self._loop.call_soon_threadsafe(_settle, future, *outcome)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled by its caller (a load timeout)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class InProcessChannel(WorkerChannel):
    """A loaded backend in this process; build it with `InProcessChannel.start`."""

    def __init__(
        self,
        *,
        model_name: str,
        version: int,
        instance_name: str,
        mode: str,
        backend: Backend,
        thread: _InstanceThread,
    ) -> None:
        self.model_name = model_name
        self.version = version
        self.instance_name = instance_name
        self.mode = mode
        self._version_text = str(version)
        self._backend = backend
        self._thread = thread
        self._all_outputs = backend.output_names()
        self._alive = True
        self._killed = False
        self._in_flight: set[asyncio.Future[Any]] = set()  # calls on the thread that someone awaits
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._upcalls = backend.upcalls = InProcessUpcalls(self._loop, mode, model_name)  # BLS calls
        values = getattr(backend, "metric_values", None)
        if values is not None:  # python models' custom metrics (workers/custom_metrics.py)
            self._upcalls.connect_metrics(values)
        self._closing: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, launch: InstanceLaunch, options: WorkerOptions, mode: str) -> InProcessChannel:
        """Load the instance's backend on its own thread; raises LoadError as start_worker does."""
        from server.repository import config_from_json

        where = launch.label
        problem = unknown_mode_problem(mode)
        if problem is None and launch.spec.kind == KIND_GPU:
            problem = gpu_kind_problem(mode, f"instance '{launch.spec.name}'")
        if problem is not None:
            raise LoadError(f"{where}: {problem}")
        init = instance_record(launch, options, in_process=True)
        thread = _InstanceThread(f"instance {launch.spec.name}")
        try:
            loaded = await asyncio.wait_for(thread.call(lambda: load_backend(init)), options.load_timeout_s)
        except BaseException as exc:
            thread.stop()  # a load that is stuck in user code keeps the (daemon) thread until it returns
            if isinstance(exc, TimeoutError):
                raise LoadError(
                    f"{where} did not finish loading within {options.load_timeout_s:g} s"
                ) from None
            if isinstance(exc, LoadError):
                raise LoadError(f"{where} failed to load: {exc.message}") from None
            raise
        channel = cls(
            model_name=launch.model_name,
            version=launch.version,
            instance_name=launch.spec.name,
            mode=mode,
            backend=loaded,
            thread=thread,
        )
        if mode == INLINE and getattr(loaded, "async_execute", False):
            await channel.close()
            raise LoadError(
                f"{where}: an async execute() cannot run inline (on the server's event loop); "
                f"use TRITONCTL_INSTANCE_MODE {THREAD} or process"
            )
        completed_json = getattr(loaded, "completed_config_json", None)
        if completed_json is not None:  # the python model's auto_complete_config changed it
            channel.completed_config = config_from_json(completed_json)
        return channel

    @property
    def alive(self) -> bool:
        return self._alive

    @property
    def model_ready(self) -> bool:
        """A python model's own is_ready(), asked now (in-process: no process boundary)."""
        is_ready = getattr(self._backend, "model_is_ready", None)
        if is_ready is None:
            return True
        try:
            return bool(is_ready())
        except Exception:
            return False

    # -- submit -----------------------------------------------------------------------------------

    async def submit(self, requests: list[InferenceRequest]) -> BatchOutcome:
        if not requests:
            return BatchOutcome(results=[])
        if not self._alive:
            raise WorkerCrashed(
                f"instance '{self.instance_name}' of model '{self.model_name}' is not running"
            )
        if self.mode == INLINE:
            return self._execute(requests)
        future = self._call(functools.partial(self._execute, requests))
        # The execution goes on if this caller is cancelled; the scheduler waits for it to free the instance.
        return await asyncio.shield(future)

    def _call(self, function: Callable[[], T]) -> asyncio.Future[T]:
        future = self._thread.call(function)
        self._in_flight.add(future)
        future.add_done_callback(self._in_flight.discard)
        return future

    def _execute(self, requests: list[InferenceRequest]) -> BatchOutcome:
        self._upcalls.executing = requests  # BLS calls made now wait in these (callers)
        started = time.monotonic_ns()
        batch = self._build_batch(requests)
        built = time.monotonic_ns()
        results = execute_batch(self._backend, batch)
        executed = time.monotonic_ns()
        answers = [
            self._result(request, answer)
            for request, answer in zip(requests, select_results(batch, results), strict=True)
        ]
        return BatchOutcome(
            results=answers,
            compute_input_ns=built - started,
            compute_infer_ns=executed - built,
            compute_output_ns=time.monotonic_ns() - executed,
        )

    def _build_batch(self, requests: list[InferenceRequest]) -> Batch:
        batch = Batch([self._backend_request(request) for request in requests], {})
        for request, target in zip(requests, batch.requests, strict=True):
            for tensor in request.inputs:
                target.inputs[tensor.name] = RequestInput(
                    tensor.name, tensor.datatype, list(tensor.shape), _byte_view(tensor.data)
                )
        if not self._backend.reads_batch_inputs:
            _make_writable(batch.requests)
            return batch
        complete = {  # input name -> every request's, when every request carries it
            name: [request.inputs[name] for request in batch.requests]
            for name in batch.requests[0].inputs
            if all(name in request.inputs for request in batch.requests)
        }
        joined = {name: _join(parts) for name, parts in complete.items()} if len(requests) > 1 else {}
        _make_writable(batch.requests)
        for name, parts in complete.items():
            first = batch.requests[0].inputs[name]
            shapes = [part.shape for part in parts]
            batch.inputs[name] = BatchInput(name, first.datatype, shapes, joined.get(name, first.data))
        return batch

    def _backend_request(self, request: InferenceRequest) -> Request:
        target = backend_request(
            request.id,
            [output.name for output in request.outputs] or None,
            scalar_parameters(request.parameters) if request.parameters else None,
            self._all_outputs,
        )
        # cancellation and response senders (inprocess_side.py)
        attach_control(request, target, self._loop, self._loop_thread, self._version_text)
        return target

    def _result(
        self, request: InferenceRequest, answer: SelectedOutputs | ServerError
    ) -> InferenceResult | ServerError:
        if isinstance(answer, ServerError):
            return answer
        return InferenceResult(
            model=request.model or self.model_name,
            version=self._version_text,
            outputs=[
                Tensor(name, datatype, shape, to_bytes(data))
                for name, datatype, shape, data in answer.tensors
            ],
            id=request.id,
            parameters=answer.parameters or {},
        )

    # -- end of life ------------------------------------------------------------------------------

    def kill(self) -> None:
        """Give the instance up now (shutdown out of time): what it is executing or finalizing fails
        with WorkerCrashed. A thread stuck in user code cannot be stopped; it is a daemon and ends
        with the server. Inline executions never overlap this call (both run on the loop's thread)."""
        if self._killed:
            return
        self._killed = True
        self._alive = False
        crashed = WorkerCrashed(
            f"instance '{self.instance_name}' of model '{self.model_name}' (in-process) was abandoned"
        )
        for future in list(self._in_flight):
            if not future.done():
                future.set_exception(crashed)
        self._thread.stop()

    async def close(self, timeout_s: float = 30.0) -> None:
        """Let the batches in flight finish, finalize the model on its thread, end the thread."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._close(timeout_s))
        await asyncio.shield(self._closing)

    async def _close(self, timeout_s: float) -> None:
        self._alive = False
        self._upcalls.close()
        if self._killed:
            return
        try:
            # Queued behind any execution in flight, on the thread the model was loaded on.
            await asyncio.wait_for(self._call(self._backend.unload), timeout_s)
        except TimeoutError:
            log.warning(
                "'%s' instance %s did not finalize in %g s", self.model_name, self.instance_name, timeout_s
            )
        except WorkerCrashed:
            pass  # killed while finalizing
        except Exception:  # a failing finalize must not stop the unload
            log.exception("'%s' instance %s failed to finalize", self.model_name, self.instance_name)
        finally:
            self._thread.stop()


def _byte_view(data: bytes | bytearray | memoryview) -> memoryview:
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _join(parts: list[RequestInput]) -> memoryview:
    """One buffer with every request's bytes back to back; each request's input becomes a view of
    its own rows in it, as in a worker's arena."""
    joined = memoryview(bytearray().join(part.data for part in parts))
    position = 0
    for part in parts:
        size = part.data.nbytes
        part.data = joined[position : position + size]
        position += size
    return joined


def _make_writable(requests: list[Request]) -> None:
    """Models may write into their inputs, as they can in a worker's arena: copy read-only ones."""
    for request in requests:
        for item in request.inputs.values():
            if item.data.readonly:
                item.data = memoryview(bytearray(item.data))
