"""InstancePool: the instances of one model version, lent out batch by batch to its scheduler.

Every scheduler takes an instance from its pool for each execution and gives it back when the
batch returns; none keeps its own list. An instance takes up to `capacity` batches at once: a
worker process has `max_in_flight` arena slots, so the main process copies batch k+1 in while the
worker computes batch k (in-process channels take one). The pool lends the least-loaded live
instance, rotating among equals, so a second batch lands on a busy instance only when none is idle.

A busy instance's spare slot is lent only against a backlog: a batch handed to a worker early can
no longer grow (the dynamic batcher would merge late arrivals into it) nor be withdrawn when its
client goes away, so it goes early only when more requests wait behind it. The batcher says so
with `acquire_nowait(spare=...)`; for waiters the pool counts them: the oldest takes a spare slot
while another waits behind it.

Who finds nothing free either waits, oldest first (`acquire`: the default scheduler), or is told
when a slot frees (`on_available`: the dynamic batcher's pump); a returned slot goes straight to
the oldest waiter that may use it. `acquire(k)` pins the batch to instance k (affinity: a
sequence stays on one instance). Instances keep their index for the pool's life: a crashed one
leaves the rotation (found dead, or `remove`) and comes back (`add`), or a new channel takes its
place (`replace`). Everything runs on the event loop thread: no locks.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
from collections.abc import Callable, Iterable

from server.errors import ServerError, WorkerCrashed
from server.workers.channel import WorkerChannel

_Waiter = tuple[int, "asyncio.Future[WorkerChannel]"]  # (arrival order, future)
_NOBODY: collections.deque[_Waiter] = collections.deque()


class _Instance:
    __slots__ = ("capacity", "channel", "in_flight", "index", "serving")

    def __init__(self, channel: WorkerChannel, index: int, capacity: int) -> None:
        self.channel = channel
        self.index = index  # -1: replaced, only its batches still out are tracked
        self.capacity = capacity
        self.in_flight = 0
        self.serving = True  # in the rotation (False: found dead or removed)


class InstancePool:
    def __init__(
        self,
        model_name: str,
        version: int | str,
        channels: Iterable[WorkerChannel],
        max_in_flight_per_instance: int | None = None,
    ) -> None:
        self.model_name = model_name
        self.version = version
        #: None: each channel's own `max_in_flight`; a number caps it (1: one batch at a time).
        self.max_in_flight_per_instance = max_in_flight_per_instance
        #: Called when a slot frees and no waiter takes it (or the rotation changes).
        self.on_available: Callable[[], None] | None = None
        self._instances: list[_Instance] = []
        self._by_channel: dict[WorkerChannel, _Instance] = {}
        self._serving = 0
        self._cursor = 0  # where the next search starts: rotation among equally loaded instances
        self._waiters: collections.deque[_Waiter] = collections.deque()  # any instance
        self._pinned: dict[int, collections.deque[_Waiter]] = {}  # instance index -> waiters
        self._arrivals = itertools.count()
        self._lent = 0  # batches out on any instance
        self._idle: asyncio.Event | None = None
        self._single: _Instance | None = None  # the instance when there is exactly one
        self._multi_slot = False  # some instance takes more than one batch (spare slots exist)
        for channel in channels:
            self.add(channel)

    # -- what is there ------------------------------------------------------------------------------

    @property
    def channels(self) -> list[WorkerChannel]:
        """The instances in the rotation, by index."""
        return [instance.channel for instance in self._instances if instance.serving]

    @property
    def live(self) -> list[WorkerChannel]:
        """The instances in the rotation whose worker is running."""
        return [i.channel for i in self._instances if i.serving and i.channel.alive]

    @property
    def has_live_instance(self) -> bool:
        return any(i.serving and i.channel.alive for i in self._instances)

    @property
    def serving_count(self) -> int:
        """Instances in the rotation (cheap: the dynamic batcher asks on every pump)."""
        return self._serving

    @property
    def lent(self) -> int:
        """Batches handed out and not yet given back, over all instances."""
        return self._lent

    def in_flight(self, instance: int) -> int:
        """Batches out on instance `instance` (an index)."""
        return self._instance_at(instance).in_flight

    def incarnation_of(self, instance: int) -> object | None:
        """The running worker of instance `instance` (WorkerChannel.incarnation); None while it
        is out of the rotation or down. The sequence batcher ends sequences whose worker changed."""
        found = self._instance_at(instance)
        return found.channel.incarnation if found.serving and found.channel.alive else None

    def index_of(self, channel: WorkerChannel) -> int:
        """The index of an instance (for `acquire(instance=...)`); ValueError if not in the pool."""
        found = self._by_channel.get(channel)
        if found is None or found.index < 0:
            raise ValueError(f"{channel.instance_name} is not an instance of this pool")
        return found.index

    # -- lending ------------------------------------------------------------------------------------

    def acquire_nowait(self, instance: int | None = None, *, spare: bool = True) -> WorkerChannel | None:
        """A slot on the least-loaded live instance (or on `instance`) now, else None. With
        `spare=False`, only an idle instance will do (no batch behind which this one would wait).

        Does not queue behind waiters: for a caller that has no waiters of its own (the batcher)."""
        if instance is None and self._single is not None:  # one instance: the hot path, inlined
            only = self._single
            load = only.in_flight
            if load >= only.capacity or (load and not spare) or not only.serving:
                return None
            if not only.channel.alive:
                self._drop(only)
                return None
            only.in_flight = load + 1
            self._lent += 1
            return only.channel
        if instance is not None:
            chosen: _Instance | None = self._instance_at(instance)
            assert chosen is not None
            if not chosen.serving or chosen.in_flight >= chosen.capacity:
                return None
            if not chosen.channel.alive:
                self._drop(chosen)
                return None
        else:
            chosen = self._least_loaded(spare)
            if chosen is None:
                return None
            self._cursor = chosen.index + 1
        chosen.in_flight += 1
        self._lent += 1
        return chosen.channel

    def try_acquire(self) -> WorkerChannel | None:
        """An idle instance now if nobody waits for one, else None (then `await acquire()`): the
        hot path of a caller that queues in the pool, without a coroutine."""
        if self._waiters:
            return None
        only = self._single
        if only is not None and not only.in_flight and only.serving and only.channel.alive:
            only.in_flight = 1
            self._lent += 1
            return only.channel
        return self.acquire_nowait(spare=False)

    def _least_loaded(self, spare: bool) -> _Instance | None:
        instances = self._instances
        count = len(instances)
        best: _Instance | None = None
        start = self._cursor % count if count else 0
        for step in range(count):
            candidate = instances[(start + step) % count]
            load = candidate.in_flight
            if not candidate.serving or load >= candidate.capacity or (load and not spare):
                continue
            if best is not None and load >= best.in_flight:
                continue
            if not candidate.channel.alive:
                self._drop(candidate)  # leaves the rotation; its supervisor brings it back via add
                continue
            best = candidate
            if load == 0:
                break
        return best

    async def acquire(self, instance: int | None = None) -> WorkerChannel:
        """A slot on the least-loaded live instance (or on `instance`), waiting in arrival order.

        Raises WorkerCrashed when no live instance is left (or `instance` is down). A caller
        cancelled just as a slot was handed to it gives the slot back."""
        while True:
            waiter = self.reserve(instance)
            try:
                channel = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self.release(waiter.result())  # handed over just as we were cancelled
                raise
            if self.usable(channel):
                return channel

    def usable(self, channel: WorkerChannel) -> bool:
        """Whether a slot handed to a waiter can still be used. Its instance may have died between
        the hand-over and the waiter's next step; then the slot comes back here (the instance leaves
        the rotation), and the waiter asks again: what it carries never left, so it need not fail."""
        if channel.alive:
            return True
        self.release(channel)
        return False

    def reserve(self, instance: int | None = None) -> asyncio.Future[WorkerChannel]:
        """`acquire` without a coroutine: a future of the slot, done at once when one is free.

        Cancelling it leaves the queue; once it holds a slot, that slot is the caller's to
        release. Raises WorkerCrashed at once when no live instance is left (or `instance` is down)."""
        queue = self._waiters if instance is None else self._pinned.get(instance)
        if not queue:
            channel = self.acquire_nowait(instance, spare=instance is not None)
            if channel is not None:
                lent: asyncio.Future[WorkerChannel] = asyncio.get_running_loop().create_future()
                lent.set_result(channel)
                return lent
        if instance is None:
            if not self._serving:
                raise WorkerCrashed(f"no live instance of '{self.model_name}' version {self.version}")
        elif not self._instance_at(instance).serving:
            raise WorkerCrashed(
                f"instance {instance} of '{self.model_name}' version {self.version} is not running"
            )
        if queue is None:
            assert instance is not None
            queue = self._pinned[instance] = collections.deque()
        waiter: asyncio.Future[WorkerChannel] = asyncio.get_running_loop().create_future()
        entry = (next(self._arrivals), waiter)
        queue.append(entry)
        if self._multi_slot and len(self._waiters) > 1:  # a backlog: the oldest may take a spare slot
            self._lend_spare()
        waiter.add_done_callback(lambda done: _withdraw(queue, entry) if done.cancelled() else None)
        return waiter

    def release(self, channel: WorkerChannel) -> None:
        """A batch on `channel` has returned: its slot goes to the oldest waiter that may use it."""
        instance = self._by_channel.get(channel)
        if instance is None:
            return
        instance.in_flight -= 1
        self._lent -= 1
        if instance.index < 0:  # replaced: forget it once its last batch is back
            if instance.in_flight == 0:
                del self._by_channel[channel]
        elif instance.serving:
            if not channel.alive:
                self._drop(instance)
            elif (self._waiters or self._pinned) and self._hand_over(instance):
                return
        if self.on_available is not None:
            self.on_available()
        if self._lent == 0 and self._idle is not None:
            self._idle.set()

    def return_unused(self, channel: WorkerChannel) -> None:
        """Give back a slot taken with acquire_nowait that ran nothing (no batch was ready)."""
        instance = self._by_channel[channel]
        instance.in_flight -= 1
        self._lent -= 1
        if self._lent == 0 and self._idle is not None:
            self._idle.set()

    def _lend_spare(self) -> None:
        while len(self._waiters) > 1:
            instance = self._least_loaded(spare=True)
            if instance is None or not self._hand_over(instance):
                return

    def _hand_over(self, instance: _Instance) -> bool:
        """Give one free slot of `instance` to the oldest waiter it can serve; False if none."""
        anyone, pinned = self._waiters, self._pinned.get(instance.index)
        if instance.in_flight and len(anyone) < 2:
            anyone = _NOBODY  # a spare slot, and no backlog: the lone waiter waits for an idle one
        while anyone or pinned:
            if pinned and (not anyone or pinned[0][0] < anyone[0][0]):
                _, waiter = pinned.popleft()
            else:
                _, waiter = anyone.popleft()
            if waiter.done():
                continue
            instance.in_flight += 1
            self._lent += 1
            waiter.set_result(instance.channel)
            return True
        return False

    # -- the rotation ---------------------------------------------------------------------------------

    def add(self, channel: WorkerChannel) -> None:
        """A new instance joins, or one that left (restarted) comes back with its old index."""
        instance = self._by_channel.get(channel)
        if instance is not None and instance.index >= 0:
            if instance.serving:
                return
            instance.serving = True
            instance.capacity = self._capacity(channel)
        else:
            instance = _Instance(channel, len(self._instances), self._capacity(channel))
            if channel in self._by_channel:  # replaced earlier, batches still out: keep counting them
                instance.in_flight = self._by_channel[channel].in_flight
            self._instances.append(instance)
            self._by_channel[channel] = instance
            self._single = instance if len(self._instances) == 1 else None
        self._serving += 1
        self._offer(instance)

    def remove(self, channel: WorkerChannel) -> None:
        """An instance leaves the rotation (batches it is executing still come back)."""
        instance = self._by_channel.get(channel)
        if instance is not None and instance.index >= 0 and instance.serving:
            self._drop(instance)

    def replace(self, old: WorkerChannel, new: WorkerChannel) -> None:
        """`new` (a restarted instance) takes `old`'s index; `old`'s batches still out are let go."""
        instance = self._by_channel[old]
        if instance.in_flight:
            retired = _Instance(old, -1, instance.capacity)
            retired.in_flight = instance.in_flight
            retired.serving = False
            self._by_channel[old] = retired
        else:
            del self._by_channel[old]
        instance.channel = new
        instance.in_flight = 0
        instance.capacity = self._capacity(new)
        self._by_channel[new] = instance
        if not instance.serving:
            instance.serving = True
            self._serving += 1
        self._offer(instance)

    def _offer(self, instance: _Instance) -> None:
        while instance.in_flight < instance.capacity and self._hand_over(instance):
            pass
        if instance.in_flight < instance.capacity and self.on_available is not None:
            self.on_available()

    def _drop(self, instance: _Instance) -> None:
        instance.serving = False
        self._serving -= 1
        pinned = self._pinned.pop(instance.index, None)
        if pinned:
            self._fail(
                pinned,
                WorkerCrashed(
                    f"instance {instance.index} of '{self.model_name}' version {self.version} is not running"
                ),
            )
        if not self._serving:
            self.fail_waiters(
                WorkerCrashed(f"no live instance of '{self.model_name}' version {self.version}")
            )

    def _instance_at(self, index: int) -> _Instance:
        if not 0 <= index < len(self._instances):
            raise ValueError(f"'{self.model_name}' version {self.version} has no instance {index}")
        return self._instances[index]

    def _capacity(self, channel: WorkerChannel) -> int:
        capacity = max(1, channel.max_in_flight)
        if self.max_in_flight_per_instance is not None:
            capacity = max(1, min(capacity, self.max_in_flight_per_instance))
        self._multi_slot = self._multi_slot or capacity > 1
        return capacity

    # -- ending -----------------------------------------------------------------------------------------

    def fail_waiters(self, error: ServerError) -> None:
        """Every waiting acquire raises `error` (the scheduler stops without draining)."""
        self._fail(self._waiters, error)
        for queue in self._pinned.values():
            self._fail(queue, error)
        self._pinned.clear()

    @staticmethod
    def _fail(queue: collections.deque[_Waiter], error: ServerError) -> None:
        while queue:
            _, waiter = queue.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    async def drain(self) -> None:
        """Return once every batch lent out has come back."""
        while self._lent:
            self._idle = asyncio.Event()
            await self._idle.wait()


def _withdraw(queue: collections.deque[_Waiter], entry: _Waiter) -> None:
    with contextlib.suppress(ValueError):  # handed over, skipped or failed already
        queue.remove(entry)
