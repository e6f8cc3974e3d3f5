"""The sequence batcher's bookkeeping: live sequences, their slots, the backlog, idle release.

Pure logic with the clock passed in (no event loop, no processes), so the rules are unit-tested
directly; sequence.py runs them. The rules follow Triton's sequence batcher
(docs/user_guide/architecture.md "Stateful Models", model_config.proto `ModelSequenceBatching`):

- every instance has `slots_per_instance` sequence slots (direct: max(1, max_batch_size); oldest:
  `max_candidate_sequences`); a starting sequence takes a free slot, lowest slot number first
  across instances (so sequences spread over the instances), else waits in the backlog, in order;
- a request that does not START a sequence must belong to a live one, else it is refused with
  Triton's words; a START on a live sequence restarts it in the slot it holds (its queued
  requests run first);
- an END request ends the sequence at once for new requests (the same id may START again: a new
  sequence), and its slot frees when that request is taken into a batch;
- a sequence with nothing queued or executing for `max_sequence_idle_microseconds` is released:
  its slot goes to the backlog or back to the free ones;
- a sequence whose instance died is ended: its queued requests fail and its next request gets a
  clear error until it STARTs again (its state died with the worker).

Iterative sequences (`iterative_sequence: true`, batcher.md "Iterative Sequences"): one request is
the whole sequence. A request without a sequence id gets the next free one (`auto_id`, counting
from 1 as Triton does) and START; a rescheduled request goes back into its sequence's queue
(`requeue`: neither START nor END now); the sequence ends when its request is released for good
(`complete`) or withdrawn.
"""

from __future__ import annotations

import contextlib
import heapq
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from server.errors import InvalidInput, ServerError, WorkerCrashed
from server.vocabulary.types import InferenceRequest

DEFAULT_IDLE_US = 1_000_000  # Triton's default max_sequence_idle_microseconds
_ENDED_MEMORY = 65536  # ended-by-crash ids remembered, oldest forgotten first


@dataclass(eq=False, slots=True)
class SequenceRequest:
    """One queued request of a sequence; `waiter` is the scheduler's future."""

    request: InferenceRequest
    corrid: int | str
    start: bool
    end: bool
    enqueue_ns: int
    waiter: Any = None
    sequence: Sequence | None = None


@dataclass(eq=False, slots=True)
class Sequence:
    corrid: int | str
    queue: deque[SequenceRequest] = field(default_factory=deque)
    slot: Slot | None = None
    last_ns: int = 0
    in_flight: int = 0
    incarnation: object | None = None  # the worker that holds its state (set by its first batch)
    live: bool = True  # accepts more requests (False once its END is queued, or it was released)


@dataclass(eq=False, slots=True)
class Slot:
    instance: int
    index: int
    sequence: Sequence | None = None

    @property
    def head(self) -> SequenceRequest | None:
        sequence = self.sequence
        return sequence.queue[0] if sequence is not None and sequence.queue else None


class SequenceTable:
    def __init__(
        self, model_name: str, instances: int, slots_per_instance: int, idle_us: int, iterative: bool = False
    ) -> None:
        self.model_name = model_name
        self.iterative = iterative
        self._next_id = 1  # the next id auto_id() gives out
        self.slots_per_instance = slots_per_instance
        self.idle_ns = (idle_us or DEFAULT_IDLE_US) * 1000
        self.slots = [[Slot(k, j) for j in range(slots_per_instance)] for k in range(instances)]
        self._free = [(j, k) for k in range(instances) for j in range(slots_per_instance)]
        heapq.heapify(self._free)
        self.live: dict[int | str, Sequence] = {}
        self.backlog: deque[Sequence] = deque()
        self.ended: OrderedDict[int | str, str] = OrderedDict()  # corrid -> why (crash)

    # -- requests in ----------------------------------------------------------------------------

    def enqueue(self, item: SequenceRequest, now_ns: int) -> Sequence:
        """Queue a request on its sequence (starting one if it STARTs); raises InvalidInput."""
        corrid = item.corrid
        sequence = self.live.get(corrid)
        if item.start:
            self.ended.pop(corrid, None)
            if sequence is None:
                sequence = Sequence(corrid)
                self.live[corrid] = sequence
                self._place(sequence)
        elif sequence is None:
            why = self.ended.get(corrid)
            if why is not None:
                raise WorkerCrashed(
                    f"inference request for sequence {corrid} to model '{self.model_name}': the "
                    f"sequence was ended because {why}; its state is lost, send the START flag to "
                    "begin it again"
                )
            raise InvalidInput(
                f"inference request for sequence {corrid} to model '{self.model_name}' must specify "
                "the START flag on the first request of the sequence"
            )
        item.sequence = sequence
        sequence.queue.append(item)
        sequence.last_ns = now_ns
        if item.end:
            sequence.live = False
            del self.live[corrid]
        return sequence

    def withdraw(self, item: SequenceRequest) -> bool:
        """Take a still-queued request out (its client went away); False if it already left."""
        sequence = item.sequence
        if sequence is None or item not in sequence.queue:
            return False
        sequence.queue.remove(item)
        if self.iterative and not sequence.queue and not sequence.in_flight:  # its one request left
            self.complete(sequence)
        elif not sequence.queue and not sequence.live:  # its END is gone: nothing will free the slot
            if sequence.slot is not None:
                self.release(sequence.slot)
            else:
                self._forget_backlogged(sequence)
        return True

    # -- iterative sequences ---------------------------------------------------------------------

    def auto_id(self) -> int:
        """The id of an iterative sequence whose request named none (skipping live ones)."""
        while self._next_id in self.live:
            self._next_id += 1
        corrid = self._next_id
        self._next_id += 1
        return corrid

    def requeue(self, item: SequenceRequest, now_ns: int) -> bool:
        """A rescheduled request back at the end of its sequence's queue, neither START nor END;
        False when its sequence was ended meanwhile (unloaded, crashed): nothing will run it."""
        sequence = item.sequence
        if sequence is None or not sequence.live or sequence.slot is None:
            return False
        item.start = item.end = False
        item.enqueue_ns = now_ns
        sequence.queue.append(item)
        sequence.last_ns = now_ns
        return True

    def complete(self, sequence: Sequence) -> None:
        """An iterative sequence's request was released for good: the sequence is over (unless its
        id has more requests queued or running: they go on in its slot)."""
        if sequence.queue or sequence.in_flight:
            return
        if self.live.get(sequence.corrid) is sequence:
            del self.live[sequence.corrid]
        sequence.live = False
        if sequence.slot is not None:
            self.release(sequence.slot)
        else:
            self._forget_backlogged(sequence)

    # -- slots ------------------------------------------------------------------------------------

    def _place(self, sequence: Sequence) -> None:
        if self._free:
            index, instance = heapq.heappop(self._free)
            self._assign(self.slots[instance][index], sequence)
        else:
            self.backlog.append(sequence)

    @staticmethod
    def _assign(slot: Slot, sequence: Sequence) -> None:
        slot.sequence = sequence
        sequence.slot = slot

    def release(self, slot: Slot) -> None:
        """The slot's sequence is over: the oldest backlogged sequence takes it, else it is free."""
        if slot.sequence is not None:
            slot.sequence.slot = None
        slot.sequence = None
        while self.backlog:
            waiting = self.backlog.popleft()
            if waiting.queue or waiting.live:
                self._assign(slot, waiting)
                return
        heapq.heappush(self._free, (slot.index, slot.instance))

    def _forget_backlogged(self, sequence: Sequence) -> None:
        with contextlib.suppress(ValueError):
            self.backlog.remove(sequence)

    def take(self, slot: Slot) -> SequenceRequest:
        """Pop the slot's next request for a batch; an END frees the slot once taken."""
        sequence = slot.sequence
        assert sequence is not None
        item = sequence.queue.popleft()
        sequence.in_flight += 1
        if item.end and not sequence.queue:
            self.release(slot)
        return item

    def finished(self, item: SequenceRequest, now_ns: int) -> None:
        """A taken request's batch came back."""
        sequence = item.sequence
        if sequence is not None:
            sequence.in_flight -= 1
            sequence.last_ns = now_ns

    def ready_slots(self, instance: int) -> list[Slot]:
        return [slot for slot in self.slots[instance] if slot.head is not None]

    # -- ending -----------------------------------------------------------------------------------

    def end(self, sequence: Sequence, why: str) -> list[SequenceRequest]:
        """End a sequence whose state was lost; returns its queued requests (to be failed)."""
        if sequence.live and self.live.get(sequence.corrid) is sequence:
            del self.live[sequence.corrid]
            self.ended[sequence.corrid] = why
            while len(self.ended) > _ENDED_MEMORY:
                self.ended.popitem(last=False)
        sequence.live = False
        dropped = list(sequence.queue)
        sequence.queue.clear()
        if sequence.slot is not None:
            self.release(sequence.slot)
        return dropped

    def reap(self, now_ns: int) -> int:
        """Release sequences idle past the limit; returns when to look again (0: nothing live)."""
        idle_ns = self.idle_ns
        wake = 0
        for sequence in list(self.live.values()):
            if sequence.slot is None:
                continue  # backlogged: waits for a slot, whatever its age
            due = sequence.last_ns + idle_ns
            if sequence.queue or sequence.in_flight or due > now_ns:
                candidate = max(due, now_ns + idle_ns // 4) if sequence.queue or sequence.in_flight else due
                wake = candidate if not wake else min(wake, candidate)
                continue
            sequence.live = False
            del self.live[sequence.corrid]
            self.release(sequence.slot)
        return wake


def sequence_parameters(request: InferenceRequest, model_name: str) -> tuple[int | str, bool, bool]:
    """(sequence id, start, end) from the request parameters, as tritonclient sends them.

    Id 0 or "" (or none) is refused with Triton's words: a sequence model needs a sequence."""
    parameters = request.parameters
    corrid = parameters.get("sequence_id", 0)
    if isinstance(corrid, bool) or not isinstance(corrid, int | str) or corrid in (0, ""):
        if isinstance(corrid, float) and corrid.is_integer() and corrid > 0:
            corrid = int(corrid)
        else:
            raise InvalidInput(
                f"inference request to model '{model_name}' must specify a non-zero or non-empty "
                "correlation ID"
            )
    return corrid, _flag(parameters.get("sequence_start")), _flag(parameters.get("sequence_end"))


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() == "true"
    return bool(value)


def fail(items: list[SequenceRequest], error: ServerError) -> None:
    for item in items:
        if item.waiter is not None and not item.waiter.done():
            item.waiter.set_exception(error)
