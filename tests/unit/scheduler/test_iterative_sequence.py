"""Iterative sequences (`iterative_sequence: true`) without processes: the table's rules, and the
sequence batcher over a channel that answers RequestRescheduled until a request's count runs out."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from server.core.scheduler import create_scheduler
from server.core.scheduler.sequence import FLAG_START, FLAGS_PARAMETER, SequenceBatcher
from server.core.scheduler.sequence_table import SequenceRequest, SequenceTable
from server.core.stats import ModelStats
from server.errors import ModelNotReady, RequestRescheduled
from server.vocabulary.types import InferenceRequest, InferenceResult, Tensor
from server.workers.channel import BatchOutcome
from tests.support.channels import LiveChannel


def config(max_batch_size: int = 2, controls: bool = True) -> mc.ModelConfig:
    control = """
        control_input [
          { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [0, 1] } ] },
          { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }
        ]"""
    text = f"""
      name: "it" backend: "python" max_batch_size: {max_batch_size}
      input {{ name: "IN" data_type: TYPE_INT32 dims: [1] }}
      output {{ name: "OUT" data_type: TYPE_INT32 dims: [1] }}
      sequence_batching {{ iterative_sequence: true {control if controls else ""} }}"""
    return text_format.Parse(text, mc.ModelConfig())


def request(count: int, **parameters: Any) -> InferenceRequest:
    data = np.array([[count]], np.int32).tobytes()
    return InferenceRequest("it", "1", [Tensor("IN", "INT32", [1, 1], data)], parameters=parameters)


class Countdown(LiveChannel):
    """Reschedules each request until it ran IN times, then answers OUT = its executions.
    Keeps every batch as (sequence_id, flags, input names) rows."""

    instance_name = "it_0"

    def __init__(self) -> None:
        self.batches: list[list[tuple[Any, int, list[str]]]] = []
        self.runs: dict[int, int] = {}  # id(request) -> executions so far
        self.seen: list[InferenceRequest] = []  # kept alive: their ids stay theirs
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def submit(self, requests: list[InferenceRequest]) -> BatchOutcome:
        self.batches.append(
            [
                (r.parameters.get("sequence_id"), r.parameters[FLAGS_PARAMETER], [t.name for t in r.inputs])
                for r in requests
            ]
        )
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        results: list[Any] = []
        for req in requests:
            self.seen.append(req)
            runs = self.runs[id(req)] = self.runs.get(id(req), 0) + 1
            count = int(np.frombuffer(req.inputs[0].data, np.int32)[0])
            if runs < count:
                results.append(RequestRescheduled("rescheduled"))
            else:
                out = np.array([[runs]], np.int32).tobytes()
                results.append(InferenceResult("it", "1", [Tensor("OUT", "INT32", [1, 1], out)]))
        return BatchOutcome(results=results)


def _out(result: InferenceResult) -> int:
    return int(np.frombuffer(result.outputs[0].data, np.int32)[0])


# -- the table ------------------------------------------------------------------------------------


def test_auto_ids_count_from_one_and_skip_live_sequences() -> None:
    table = SequenceTable("it", 1, 2, 1000, iterative=True)
    assert table.auto_id() == 1
    table.enqueue(SequenceRequest(request(1), 2, True, False, 0), 0)  # a client named id 2
    assert table.auto_id() == 3


def test_a_requeued_request_keeps_its_slot_and_a_completed_one_frees_it() -> None:
    table = SequenceTable("it", 1, 1, 1000, iterative=True)
    item = SequenceRequest(request(3), 1, True, False, 0)
    sequence = table.enqueue(item, 0)
    waiting = table.enqueue(SequenceRequest(request(1), 2, True, False, 0), 0)
    assert sequence.slot is not None and waiting.slot is None  # one slot: the second waits
    slot = sequence.slot
    table.finished(table.take(slot), 5)
    assert table.requeue(item, 6) and (item.start, item.enqueue_ns) == (False, 6)
    assert slot.head is item and waiting.slot is None
    table.finished(table.take(slot), 7)
    table.complete(sequence)
    assert 1 not in table.live and waiting.slot is slot  # the backlog gets the slot
    assert not table.requeue(item, 8)  # its sequence is over: nothing would run it


def test_withdrawing_a_queued_iterative_request_ends_its_sequence() -> None:
    table = SequenceTable("it", 1, 1, 1000, iterative=True)
    item = SequenceRequest(request(3), 1, True, False, 0)
    sequence = table.enqueue(item, 0)
    assert table.withdraw(item)
    assert sequence.slot is None and not table.live and table.ready_slots(0) == []


# -- the batcher ------------------------------------------------------------------------------------


def test_a_rescheduled_request_runs_again_with_flags_zero_and_its_control_tensors_once() -> None:
    asyncio.run(asyncio.wait_for(_runs_again(), timeout=10))


async def _runs_again() -> None:
    channel = Countdown()
    batcher = create_scheduler(config(), 1, [channel], ModelStats())
    assert isinstance(batcher, SequenceBatcher) and batcher.iterative
    await batcher.start()
    answer = await batcher.submit(request(3))
    assert _out(answer) == 3
    rows = [row for batch in channel.batches for row in batch]
    assert [(corrid, flags) for corrid, flags, _ in rows] == [(1, FLAG_START), (1, 0), (1, 0)]
    assert all(names == ["IN", "START", "CORRID"] for _, _, names in rows)  # never twice
    named = await batcher.submit(request(2, sequence_id=50, sequence_start=True))
    assert _out(named) == 2 and channel.batches[-1][0][0] == 50
    assert batcher.pending == 0 and not batcher.table.live  # every sequence ended, slots free
    await batcher.stop()


def test_rescheduled_and_new_requests_share_batches() -> None:
    asyncio.run(asyncio.wait_for(_shared_batches(), timeout=10))


async def _shared_batches() -> None:
    channel = Countdown()
    channel.gate = asyncio.Event()
    batcher = create_scheduler(config(max_batch_size=2, controls=False), 1, [channel], ModelStats())
    await batcher.start()
    first = batcher.submit(request(3))
    await channel.entered.wait()  # the first runs alone; the second arrives meanwhile
    second = batcher.submit(request(2))
    third = batcher.submit(request(1))  # two slots: waits in the backlog
    channel.gate.set()
    assert [_out(answer) for answer in await asyncio.gather(first, second, third)] == [3, 2, 1]
    sizes = [len(batch) for batch in channel.batches]
    assert sizes[0] == 1 and 2 in sizes  # a rescheduled request ran beside the new one
    assert sorted(corrid for batch in channel.batches for corrid, flags, _ in batch if flags) == [1, 2, 3]
    await batcher.stop()


def test_a_request_cancelled_while_it_runs_is_not_rescheduled() -> None:
    asyncio.run(asyncio.wait_for(_cancelled(), timeout=10))


async def _cancelled() -> None:
    channel = Countdown()
    channel.gate = asyncio.Event()
    stats = ModelStats()
    batcher = create_scheduler(config(max_batch_size=0), 1, [channel], stats)
    await batcher.start()
    future = batcher.submit(request(5))
    await channel.entered.wait()
    future.cancel()
    channel.gate.set()
    answer = await batcher.submit(request(1))  # one slot: free again
    assert _out(answer) == 1 and len(channel.batches) == 2
    assert batcher.pending == 0 and not batcher.table.live
    await batcher.stop()


def test_an_unload_without_drain_fails_a_request_rescheduled_meanwhile() -> None:
    asyncio.run(asyncio.wait_for(_unloaded(), timeout=10))


async def _unloaded() -> None:
    channel = Countdown()
    channel.gate = asyncio.Event()
    batcher = create_scheduler(config(), 1, [channel], ModelStats())
    await batcher.start()
    future = batcher.submit(request(5))
    await channel.entered.wait()
    stopping = asyncio.ensure_future(batcher.stop(drain=False))
    await asyncio.sleep(0)
    channel.gate.set()
    with pytest.raises(ModelNotReady):
        await future
    await stopping
    assert batcher.pending == 0


def test_a_drained_stop_waits_for_rescheduled_requests_to_finish() -> None:
    asyncio.run(asyncio.wait_for(_drained(), timeout=10))


async def _drained() -> None:
    channel = Countdown()
    batcher = create_scheduler(config(), 1, [channel], ModelStats())
    await batcher.start()
    future = batcher.submit(request(4))
    await channel.entered.wait()
    await batcher.stop(drain=True)
    assert future.done() and _out(future.result()) == 4
