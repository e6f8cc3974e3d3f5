"""SequenceBatcher: the scheduler of stateful models (config `sequence_batching`).

Every live sequence owns a slot of one instance (sequence_table.py) and all its requests run
there, in order: the InstancePool lends that instance only (`acquire_nowait(instance=k)`), and a
worker executes its batches one after the other, so the state a request leaves behind is in place
for the next one. Implicit state lives in the worker beside the model (server/workers/
sequence_state.py), keyed by slot; the batcher tells it each row's slot and flags through the
request parameters `_sequence_slot` / `_sequence_flags` (the worker strips them).

Two strategies, as Triton's:
- direct (default): a batch holds rows 0..n of the instance's slots; a slot without a ready
  request gets a null row (the inputs of a ready request zeroed, READY false, CORRID 0) whose
  answer is dropped, so every sequence keeps its row (python models, whose requests run one by
  one, get the ready rows only). `max_queue_delay_microseconds` with
  `minimum_slot_utilization` hold a batch until enough slots are ready or the oldest waited long
  enough.
- oldest: `max_candidate_sequences` slots per instance; the ready heads are batched oldest first
  (never two requests of one sequence in a batch), up to max_batch_size, with
  `preferred_batch_size`, `max_queue_delay_microseconds` and `preserve_ordering`.
Control tensors (control_tensors.py) are added to every row as inputs.

`iterative_sequence: true` (python models' request rescheduling): a request needs no sequence id
(one is given, with START), and an answer that says RequestRescheduled (the model called
`set_release_flags(TRITONSERVER_REQUEST_RELEASE_RESCHEDULE)`) puts the same request back into its
sequence, in its slot, for a later batch, where it is joined by new and other rescheduled requests
(continuous batching); any other answer ends the sequence and frees the slot.

Like the dynamic batcher, everything runs on the event loop thread: a pump runs after requests
arrive and whenever an instance frees up, and one timer covers batching delays and idle release.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import TYPE_CHECKING

from server.core.scheduler.control_tensors import ControlTensors
from server.core.scheduler.pumped import PumpedScheduler
from server.core.scheduler.sequence_table import (
    SequenceRequest,
    SequenceTable,
    Slot,
    fail,
    sequence_parameters,
)
from server.core.stats import ModelStats
from server.errors import BackendError, InvalidInput, RequestRescheduled, ServerError, WorkerCrashed
from server.vocabulary.types import InferenceRequest, InferenceResult, Tensor
from server.workers.channel import BatchOutcome, WorkerChannel

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2

FLAG_START, FLAG_END, FLAG_NULL = 1, 2, 4  # _sequence_flags bits (START/END as Triton's request flags)
SLOT_PARAMETER, FLAGS_PARAMETER = "_sequence_slot", "_sequence_flags"


@dataclass(eq=False, slots=True)
class _Execution:
    rows: list[SequenceRequest | None]  # None: a null row
    dispatch_ns: int
    outcome: BatchOutcome | None = None


class SequenceBatcher(PumpedScheduler):
    def __init__(
        self,
        config: model_config_pb2.ModelConfig,
        version: int | str,
        channels: Seq[WorkerChannel],
        stats: ModelStats,
        max_in_flight_per_instance: int | None = None,
    ) -> None:
        super().__init__(config.name, version, channels, max_in_flight_per_instance)
        self.stats = stats
        batching = config.sequence_batching
        self.direct = not batching.HasField("oldest")
        self.max_batch_size = max(1, config.max_batch_size)
        self.batched = config.max_batch_size > 0
        if self.direct:
            slots = self.max_batch_size
            self.delay_ns = batching.direct.max_queue_delay_microseconds * 1000
            self.min_utilization = batching.direct.minimum_slot_utilization
            self.preferred: tuple[int, ...] = ()
            self.preserve_ordering = False
        else:
            oldest = batching.oldest
            slots = oldest.max_candidate_sequences or self.max_batch_size
            self.delay_ns = oldest.max_queue_delay_microseconds * 1000
            self.min_utilization = 0.0
            self.preferred = tuple(sorted(size for size in oldest.preferred_batch_size if size > 0))
            self.preserve_ordering = oldest.preserve_ordering
        self.controls = ControlTensors(config)
        # Null rows keep each sequence in its batch row for backends that batch tensors by row;
        # a python model gets each request on its own, so its direct batches hold ready rows only.
        self.null_rows = config.backend != "python"
        self.iterative = batching.iterative_sequence
        self.table = SequenceTable(
            self.model_name,
            len(self.pool.channels),
            slots,
            batching.max_sequence_idle_microseconds,
            iterative=self.iterative,
        )
        self._in_order: collections.deque[_Execution] = collections.deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reap_at = 0  # when idle sequences are looked for next (0: none live)

    # -- Scheduler ------------------------------------------------------------------------------

    async def stop(self, drain: bool = True) -> None:
        self._accepting = False
        if not drain:
            error = self.not_ready()
            for sequence in [*self.table.live.values(), *self.table.backlog]:
                self._fail_items(self.table.end(sequence, "the model was unloaded"), error)
        if self._pending.count:
            self._schedule_pump()
            await self._pending.settled()
        self._stop_pumping()

    def submit(self, request: InferenceRequest) -> asyncio.Future[InferenceResult]:
        if not self._accepting:
            raise self.not_ready()
        if self.iterative:
            corrid, start, end = self._iterative_parameters(request)
        else:
            corrid, start, end = sequence_parameters(request, self.model_name)
        if self.batched and request.batch_rows(self.max_batch_size) != 1:
            raise InvalidInput(
                f"inference request to model '{self.model_name}' must specify batch-size 1 due to "
                "requirements of sequence batcher"
            )
        future: asyncio.Future[InferenceResult] = self._loop().create_future()
        now = time.monotonic_ns()
        item = SequenceRequest(request, corrid, start, end, now, future)
        self.table.enqueue(item, now)  # InvalidInput / WorkerCrashed before anything is counted
        return self._queued(item, future)

    def _iterative_parameters(self, request: InferenceRequest) -> tuple[int | str, bool, bool]:
        """An iterative sequence is its one request: without an id it gets one (and START), as
        Triton's IterativeSequencer does; it ends when the request is released, never by END."""
        if request.parameters.get("sequence_id") in (None, 0, ""):
            given = self.table.auto_id()
            kept = {k: v for k, v in request.parameters.items() if k != "sequence_end"}
            request.parameters = {**kept, "sequence_id": given, "sequence_start": True}
            return given, True, False
        corrid, start, _ = sequence_parameters(request, self.model_name)
        return corrid, start, False

    def _withdraw(self, item: SequenceRequest) -> None:
        if self.table.withdraw(item):
            self._cancelled_in_queue(item.request)

    # -- the pump -------------------------------------------------------------------------------

    def _pump(self) -> None:
        self._pump_handle = None
        now = time.monotonic_ns()
        if self._reap_at and now >= self._reap_at:
            for instance in range(len(self.table.slots)):  # a crash ends, idleness only releases
                self._end_crashed(instance)
            self._reap_at = self.table.reap(now)
        elif not self._reap_at and self.table.live:
            self._reap_at = now + self.table.idle_ns
        wake = self._reap_at
        for instance in range(len(self.table.slots)):
            wait_ns = self._pump_instance(instance, now)
            if wait_ns is not None and (not wake or now + wait_ns < wake):
                wake = now + wait_ns
        self._arm_timer(wake, now)

    def _pump_instance(self, instance: int, now: int) -> int | None:
        """Dispatch what instance `instance` can take now; returns how long to wait (ns) or None."""
        table, pool = self.table, self.pool
        while True:
            ready = table.ready_slots(instance)
            if not ready:
                return None
            if pool.incarnation_of(instance) is None:  # crashed: its sequences' state is gone
                self._end_crashed(instance)
                if not pool.has_live_instance:  # nothing to wait for: fail what is queued, like the others
                    for slot in table.ready_slots(instance):
                        self._fail_sequence(slot, "no instance of the model is running")
                return None  # new sequences wait for it to come back (pool.add wakes the pump)
            rows, wait_ns = self._form(instance, ready, now)
            if rows is None:
                return wait_ns
            full = sum(row is not None for row in rows) >= table.slots_per_instance
            if pool.in_flight(instance) and not full and self.null_rows:
                # A batch of rows that can still grow waits for the instance to be idle; a python
                # model's requests run one by one anyway, so they go at once to a free arena slot.
                return None
            channel = pool.acquire_nowait(instance)
            if channel is None:
                return None
            lost = [slot for slot in rows if slot is not None and self._lost(slot, channel)]
            if lost:
                pool.return_unused(channel)
                self._end_lost(lost, channel)
                continue
            self._dispatch(channel, rows, now)

    def _form(
        self, instance: int, ready: list[Slot], now: int
    ) -> tuple[list[Slot | None] | None, int | None]:
        """The rows of the next batch of `instance` (None: wait, for the ns returned)."""
        oldest_ns = min(slot.head.enqueue_ns for slot in ready if slot.head is not None)
        waited = now - oldest_ns
        delay_over = self.delay_ns == 0 or waited >= self.delay_ns
        if self.direct:
            enough = self.min_utilization <= 0 or len(ready) / self.max_batch_size >= self.min_utilization
            if not (delay_over or enough):
                return None, self.delay_ns - waited
            if not self.null_rows:
                return list(ready), None
            last = max(slot.index for slot in ready)
            ready_set = set(ready)
            return [
                slot if slot in ready_set else None for slot in self.table.slots[instance][: last + 1]
            ], None
        by_age = sorted(ready, key=lambda slot: slot.head.enqueue_ns if slot.head is not None else 0)
        count = min(len(by_age), self.max_batch_size)
        preferred = self.preferred
        if not (
            delay_over
            or count >= self.max_batch_size
            or count in preferred
            or (preferred and count >= preferred[-1])
        ):
            return None, self.delay_ns - waited
        return list(by_age[:count]), None

    def _lost(self, slot: Slot, channel: WorkerChannel) -> bool:
        """True when the slot's sequence had its state on a worker that is gone (and does not START)."""
        sequence, head = slot.sequence, slot.head
        assert sequence is not None and head is not None
        if head.start:
            return False
        return sequence.incarnation is not None and sequence.incarnation is not channel.incarnation

    def _end_lost(self, slots: list[Slot], channel: WorkerChannel) -> None:
        for slot in slots:
            if slot.sequence is not None and self._lost(slot, channel):
                self._end_crashed_sequence(slot)

    def _end_crashed(self, instance: int) -> None:
        """End the sequences whose state was on a worker of `instance` that is no longer running."""
        current = self.pool.incarnation_of(instance)
        for slot in self.table.slots[instance]:
            sequence = slot.sequence
            if sequence is None or sequence.incarnation is None or sequence.incarnation is current:
                continue
            head = slot.head
            if head is not None and head.start:  # starts again anyway: it needs no old state
                sequence.incarnation = None
                continue
            self._end_crashed_sequence(slot)

    def _end_crashed_sequence(self, slot: Slot) -> None:
        self._fail_sequence(slot, f"instance {slot.instance} of model '{self.model_name}' crashed")

    def _fail_sequence(self, slot: Slot, why: str) -> None:
        sequence = slot.sequence
        assert sequence is not None
        self._fail_items(
            self.table.end(sequence, why),
            WorkerCrashed(
                f"sequence {sequence.corrid} of model '{self.model_name}' was ended: {why} and its "
                "state is lost; send the START flag to begin the sequence again"
            ),
        )

    def _fail_items(self, items: list[SequenceRequest], error: ServerError) -> None:
        now = time.monotonic_ns()
        for item in items:
            self.stats.record_failure(request_ns=now - item.request.arrival_ns, reason="BACKEND")
        fail(items, error)
        self._pending.done(len(items))

    # -- execution ------------------------------------------------------------------------------

    def _dispatch(self, channel: WorkerChannel, slots: list[Slot | None], now: int) -> None:
        incarnation = channel.incarnation
        rows: list[SequenceRequest | None] = []
        requests: list[InferenceRequest] = []
        template: InferenceRequest | None = None
        for slot in slots:
            if slot is None:
                rows.append(None)
                continue
            sequence = slot.sequence
            assert sequence is not None
            if sequence.incarnation is not incarnation:
                sequence.incarnation = incarnation
            item = self.table.take(slot)
            rows.append(item)
            request = item.request
            template = template or request
            flags = (FLAG_START if item.start else 0) | (FLAG_END if item.end else 0)
            # A copy: ensemble steps share their request's parameters, and run side by side.
            request.parameters = {**request.parameters, SLOT_PARAMETER: slot.index, FLAGS_PARAMETER: flags}
            if self.controls:
                request.inputs.extend(
                    self.controls.for_row(start=item.start, end=item.end, ready=True, corrid=item.corrid)
                )
        assert template is not None
        for row in rows:
            requests.append(row.request if row is not None else self._null_request(template))
        execution = _Execution(rows, now)
        if self.preserve_ordering:
            self._in_order.append(execution)
        task = self._loop().create_task(self._execute(channel, requests, execution))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _null_request(self, template: InferenceRequest) -> InferenceRequest:
        """A row for an empty slot: the template's inputs zeroed (BYTES: empty strings), not ready."""
        control_names = self.controls.names
        inputs = [
            Tensor(tensor.name, tensor.datatype, list(tensor.shape), _zeros(tensor))
            for tensor in template.inputs
            if tensor.name not in control_names
        ]
        if self.controls:
            inputs.extend(self.controls.for_row(start=False, end=False, ready=False, corrid=0))
        return InferenceRequest(
            model=template.model,
            version=template.version,
            inputs=inputs,
            outputs=list(template.outputs),
            parameters={SLOT_PARAMETER: -1, FLAGS_PARAMETER: FLAG_NULL},
        )

    async def _execute(
        self, channel: WorkerChannel, requests: list[InferenceRequest], execution: _Execution
    ) -> None:
        rows = execution.rows
        real = [row for row in rows if row is not None]
        crashed = False
        try:
            outcome = await channel.submit(requests)
        except ServerError as error:
            crashed = isinstance(error, WorkerCrashed)
            outcome = BatchOutcome(results=[error] * len(rows))
        except Exception as error:  # a bug below the seam must not strand the waiting clients
            outcome = BatchOutcome(results=[BackendError(f"instance failed: {error}")] * len(rows))
        else:
            self.stats.record_execution(
                batch_size=len(real),
                compute_input_ns=outcome.compute_input_ns,
                compute_infer_ns=outcome.compute_infer_ns,
                compute_output_ns=outcome.compute_output_ns,
                inferences=sum(
                    1
                    for row, result in zip(rows, outcome.results, strict=False)
                    if row is not None and not (isinstance(result, ServerError) and not result.model_response)
                ),
            )
        finally:
            self.pool.release(channel)  # wakes the pump (on_available)
        now = time.monotonic_ns()
        for row in real:
            self.table.finished(row, now)
        if self.iterative:
            self._iterate(execution.rows, outcome.results, now)
        if crashed:  # every sequence whose state that worker held ends, not only this batch's
            for instance, slots in enumerate(self.table.slots):
                if any(slot.sequence is not None for slot in slots):
                    self._end_crashed(instance)
        execution.outcome = outcome
        if not self.preserve_ordering:
            self._deliver(execution)
            return
        while self._in_order and self._in_order[0].outcome is not None:
            self._deliver(self._in_order.popleft())

    def _iterate(
        self, rows: list[SequenceRequest | None], results: list[InferenceResult | ServerError], now: int
    ) -> None:
        """Iterative sequences after a batch: a rescheduled row goes back into its sequence (and
        is no longer a row of this batch: nothing answers it now); any other ends its sequence."""
        requeued = False
        for index, row in enumerate(rows):
            if row is None or row.sequence is None:
                continue
            if index < len(results) and isinstance(results[index], RequestRescheduled):
                rows[index] = None
                requeued = self._reschedule(row, now) or requeued
            else:
                self.table.complete(row.sequence)
        if requeued:
            self._schedule_pump()

    def _reschedule(self, item: SequenceRequest, now: int) -> bool:
        """The same request again, in its slot; what its client gets when that cannot be."""
        sequence = item.sequence
        assert sequence is not None
        if item.waiter.done():  # cancelled while it ran: its sequence ends here
            self.table.complete(sequence)
            self._cancelled_in_queue(item.request)
            return False
        request = item.request
        if self.controls:  # the next dispatch adds them again, with START false
            request.inputs = [tensor for tensor in request.inputs if tensor.name not in self.controls.names]
        request.parameters = {
            key: value
            for key, value in request.parameters.items()
            if key not in ("sequence_start", "sequence_end")  # the model sees flags 0 now
        }
        if self.table.requeue(item, now):
            return True
        self._fail_items(
            [item],
            self.not_ready()
            if not self._accepting
            else WorkerCrashed(
                f"sequence {item.corrid} of model '{self.model_name}' was ended while its request "
                "was rescheduled"
            ),
        )
        return False

    def _deliver(self, execution: _Execution) -> None:
        assert execution.outcome is not None
        self._deliver_rows(execution.rows, execution.outcome, execution.dispatch_ns)


def _zeros(tensor: Tensor) -> bytes:
    if tensor.datatype != "BYTES":
        return bytes(len(tensor.data))
    count = 1
    for dim in tensor.shape:
        count *= dim
    return bytes(4 * count)  # every element an empty string (length 0)
