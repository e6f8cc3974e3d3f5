"""The sequence batcher's rules without processes: slots, backlog, idle release, control tensors,
and batches as a recording channel sees them (rows by slot, null rows, one request per sequence)."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from server.core.scheduler import create_scheduler
from server.core.scheduler.control_tensors import ControlTensors, corrid_bytes
from server.core.scheduler.sequence import FLAG_NULL, FLAGS_PARAMETER, SLOT_PARAMETER, SequenceBatcher
from server.core.scheduler.sequence_table import SequenceRequest, SequenceTable, sequence_parameters
from server.core.stats import ModelStats
from server.errors import InvalidInput, WorkerCrashed
from server.vocabulary.types import InferenceRequest, InferenceResult, Tensor
from server.workers.channel import BatchOutcome
from tests.support.channels import LiveChannel


def config(
    strategy: str = "direct { }", max_batch_size: int = 2, corrid: str = "TYPE_UINT64"
) -> mc.ModelConfig:
    text = f"""
      name: "seq" max_batch_size: {max_batch_size}
      input {{ name: "INPUT" data_type: TYPE_INT32 dims: [1] }}
      output {{ name: "OUTPUT" data_type: TYPE_INT32 dims: [1] }}
      sequence_batching {{
        {strategy}
        control_input [
          {{ name: "START" control [ {{ kind: CONTROL_SEQUENCE_START fp32_false_true: [0, 1] }} ] }},
          {{ name: "READY" control [ {{ kind: CONTROL_SEQUENCE_READY bool_false_true: [false, true] }} ] }},
          {{ name: "END" control [ {{ kind: CONTROL_SEQUENCE_END int32_false_true: [5, 7] }} ] }},
          {{ name: "CORRID" control [ {{ kind: CONTROL_SEQUENCE_CORRID data_type: {corrid} }} ] }}
        ]
      }}"""
    return text_format.Parse(text, mc.ModelConfig())


def request(corrid: int | str, value: int, *, start: bool = False, end: bool = False) -> InferenceRequest:
    parameters: dict[str, Any] = {"sequence_id": corrid}
    if start:
        parameters["sequence_start"] = True
    if end:
        parameters["sequence_end"] = True
    data = np.array([[value]], np.int32).tobytes()
    return InferenceRequest("seq", "1", [Tensor("INPUT", "INT32", [1, 1], data)], parameters=parameters)


def item(corrid: int | str, *, start: bool = False, end: bool = False, now: int = 0) -> SequenceRequest:
    return SequenceRequest(request(corrid, 0, start=start, end=end), corrid, start, end, now)


# -- the table ------------------------------------------------------------------------------------


def test_sequences_spread_over_instances_then_wait_in_the_backlog_in_order() -> None:
    table = SequenceTable("seq", instances=2, slots_per_instance=1, idle_us=1000)
    first = table.enqueue(item(1, start=True), 0)
    second = table.enqueue(item(2, start=True), 0)
    third = table.enqueue(item(3, start=True), 0)
    fourth = table.enqueue(item(4, start=True), 0)
    assert first.slot is not None and second.slot is not None
    assert {first.slot.instance, second.slot.instance} == {0, 1}
    assert third.slot is None and list(table.backlog) == [third, fourth]
    table.enqueue(item(1, end=True), 0)
    assert first.slot is not None
    table.take(first.slot)  # START
    slot = first.slot
    table.take(slot)  # END: the slot goes to the oldest backlogged sequence
    assert third.slot is slot and fourth.slot is None


def test_a_request_without_start_of_an_unknown_sequence_is_refused_with_tritons_words() -> None:
    table = SequenceTable("seq", 1, 1, 1000)
    with pytest.raises(
        InvalidInput, match="must specify the START flag on the first request of the sequence"
    ):
        table.enqueue(item(9), 0)
    with pytest.raises(InvalidInput, match="non-zero or non-empty correlation ID"):
        sequence_parameters(InferenceRequest("seq", "", [], parameters={"sequence_id": 0}), "seq")
    with pytest.raises(InvalidInput, match="non-zero or non-empty correlation ID"):
        sequence_parameters(InferenceRequest("seq", "", [], parameters={"sequence_id": ""}), "seq")
    assert sequence_parameters(
        InferenceRequest("seq", "", [], parameters={"sequence_id": "abc", "sequence_start": True}), "seq"
    ) == ("abc", True, False)


def test_an_idle_sequence_is_released_and_its_slot_reused() -> None:
    table = SequenceTable("seq", 1, 1, idle_us=1000)  # 1 ms
    first = table.enqueue(item(1, start=True), 0)
    assert first.slot is not None
    taken = table.take(first.slot)
    table.finished(taken, 10)
    waiting = table.enqueue(item(2, start=True), 20)
    assert waiting.slot is None
    assert table.reap(500_000) == 1_000_010  # not idle yet: look again when it would be
    table.reap(2_000_000)
    assert waiting.slot is not None and 1 not in table.live
    with pytest.raises(InvalidInput, match="START"):
        table.enqueue(item(1), 2_000_001)


def test_a_start_on_a_live_sequence_restarts_it_in_its_slot() -> None:
    table = SequenceTable("seq", 1, 2, 1000)
    sequence = table.enqueue(item(1, start=True), 0)
    again = table.enqueue(item(1, start=True), 0)
    assert again is sequence and len(sequence.queue) == 2


def test_an_ended_sequence_answers_a_clear_error_until_it_starts_again() -> None:
    table = SequenceTable("seq", 1, 1, 1000)
    sequence = table.enqueue(item(1, start=True), 0)
    table.end(sequence, "instance 0 crashed")
    with pytest.raises(WorkerCrashed, match="instance 0 crashed"):
        table.enqueue(item(1), 0)
    assert table.enqueue(item(1, start=True), 0).slot is not None


# -- control tensors --------------------------------------------------------------------------------


def test_control_tensors_carry_the_configured_types_and_values() -> None:
    controls = ControlTensors(config())
    tensors = {t.name: t for t in controls.for_row(start=True, end=False, ready=True, corrid=77)}
    assert tensors["START"].datatype == "FP32" and struct.unpack("<f", tensors["START"].data) == (1.0,)
    assert tensors["READY"].datatype == "BOOL" and tensors["READY"].data == b"\x01"
    assert tensors["END"].datatype == "INT32" and struct.unpack("<i", tensors["END"].data) == (5,)
    assert tensors["CORRID"].datatype == "UINT64" and struct.unpack("<Q", tensors["CORRID"].data) == (77,)
    assert all(t.shape == [1, 1] for t in tensors.values())
    string = ControlTensors(config(corrid="TYPE_STRING", max_batch_size=0))
    corr = next(
        t for t in string.for_row(start=False, end=False, ready=False, corrid="ab") if t.name == "CORRID"
    )
    assert corr.datatype == "BYTES" and corr.data == b"\x02\x00\x00\x00ab" and corr.shape == [1]
    assert corrid_bytes("INT32", "<i", 2**32 + 5) == struct.pack("<i", 5)


# -- the batcher over a recording channel ---------------------------------------------------------------


class Recorder(LiveChannel):
    """Answers each row with its INPUT, and keeps every batch it saw."""

    instance_name = "seq_0"

    def __init__(self) -> None:
        self.batches: list[list[InferenceRequest]] = []
        self.gate: asyncio.Event | None = None

    async def submit(self, requests: list[InferenceRequest]) -> BatchOutcome:
        self.batches.append(requests)
        if self.gate is not None:
            await self.gate.wait()
        results: list[Any] = []
        for req in requests:
            value = next(t for t in req.inputs if t.name == "INPUT")
            results.append(
                InferenceResult("seq", "1", [Tensor("OUTPUT", "INT32", [1, 1], bytes(value.data))])
            )
        return BatchOutcome(results=results)


def _ready(req: InferenceRequest) -> bool:
    return next(t for t in req.inputs if t.name == "READY").data == b"\x01"


def test_direct_batches_keep_each_sequence_in_its_row_with_null_rows_between() -> None:
    asyncio.run(asyncio.wait_for(_direct_rows(), timeout=10))


async def _direct_rows() -> None:
    channel = Recorder()
    batcher = create_scheduler(config(), 1, [channel], ModelStats())
    assert isinstance(batcher, SequenceBatcher)
    await batcher.start()
    channel.gate = asyncio.Event()
    first, second = batcher.submit(request(1, 10, start=True)), batcher.submit(request(2, 20, start=True))
    await asyncio.gather(first, second, _open_soon(channel.gate))
    # Sequence 1 has slot 0, sequence 2 slot 1; now only sequence 2 sends: row 0 is a null row.
    answer = await batcher.submit(request(2, 21))
    last = channel.batches[-1]
    assert len(last) == 2 and not _ready(last[0]) and _ready(last[1])
    assert last[0].parameters[FLAGS_PARAMETER] == FLAG_NULL and last[1].parameters[SLOT_PARAMETER] == 1
    assert np.frombuffer(answer.outputs[0].data, np.int32).tolist() == [21]
    with pytest.raises(InvalidInput, match="batch-size 1"):
        bad = request(1, 0)
        bad.inputs[0] = Tensor("INPUT", "INT32", [2, 1], bytes(8))
        batcher.submit(bad)
    await batcher.stop()


async def _open_soon(gate: asyncio.Event) -> None:
    await asyncio.sleep(0)
    gate.set()


def test_oldest_never_puts_two_requests_of_one_sequence_in_a_batch() -> None:
    asyncio.run(asyncio.wait_for(_oldest_batches(), timeout=10))


async def _oldest_batches() -> None:
    channel = Recorder()
    channel.gate = asyncio.Event()
    batcher = create_scheduler(config("oldest { max_candidate_sequences: 4 }", 4), 1, [channel], ModelStats())
    await batcher.start()
    sent = [request(1, 1, start=True), request(1, 2), request(2, 3, start=True), request(1, 4, end=True)]
    futures = [batcher.submit(one) for one in sent]
    channel.gate.set()
    answers = await asyncio.gather(*futures)
    assert [np.frombuffer(a.outputs[0].data, np.int32)[0] for a in answers] == [1, 2, 3, 4]
    for batch in channel.batches:
        ids = [r.parameters["sequence_id"] for r in batch]
        assert len(ids) == len(set(ids))
    order = [
        r.parameters["sequence_id"]
        for batch in channel.batches
        for r in batch
        if r.parameters["sequence_id"] == 1
    ]
    assert len(order) == 3
    await batcher.stop()


def test_direct_holds_a_batch_until_enough_slots_are_ready() -> None:
    asyncio.run(asyncio.wait_for(_slot_utilization(), timeout=10))


async def _slot_utilization() -> None:
    channel = Recorder()
    held = config("direct { max_queue_delay_microseconds: 10000000 minimum_slot_utilization: 1.0 }")
    batcher = create_scheduler(held, 1, [channel], ModelStats())
    await batcher.start()
    first = batcher.submit(request(1, 10, start=True))
    for _ in range(5):  # let the pump run: one of two slots ready is below the utilization asked
        await asyncio.sleep(0)
    assert channel.batches == []
    second = batcher.submit(request(2, 20, start=True))
    await asyncio.gather(first, second)
    assert [len(batch) for batch in channel.batches] == [2]  # both rows in one batch, no null row
    assert all(_ready(row) for row in channel.batches[0])
    await batcher.stop()


def test_oldest_waits_for_a_preferred_batch_size_within_the_delay() -> None:
    asyncio.run(asyncio.wait_for(_oldest_preferred(), timeout=10))


async def _oldest_preferred() -> None:
    channel = Recorder()
    oldest = config(
        "oldest { max_candidate_sequences: 4 preferred_batch_size: [3] "
        "max_queue_delay_microseconds: 10000000 }",
        4,
    )
    batcher = create_scheduler(oldest, 1, [channel], ModelStats())
    await batcher.start()
    futures = [batcher.submit(request(n, n, start=True)) for n in (1, 2)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert channel.batches == []  # two ready, preferred three, the delay has not run out
    futures.append(batcher.submit(request(3, 3, start=True)))
    await asyncio.gather(*futures)
    assert [len(batch) for batch in channel.batches] == [3]
    await batcher.stop()


def test_oldest_preserve_ordering_answers_in_dispatch_order_across_instances() -> None:
    asyncio.run(asyncio.wait_for(_preserve_ordering(), timeout=10))


async def _preserve_ordering() -> None:
    first, second = Recorder(), Recorder()
    first.gate = asyncio.Event()  # instance 0 is slow: its batch finishes last
    ordered = config("oldest { max_candidate_sequences: 1 preserve_ordering: true }", 1)
    batcher = create_scheduler(ordered, 1, [first, second], ModelStats())
    await batcher.start()
    done: list[int] = []
    futures = [batcher.submit(request(n, n, start=True)) for n in (1, 2)]
    for number, future in zip((1, 2), futures, strict=True):
        future.add_done_callback(lambda _, number=number: done.append(number))
    while not (first.batches and second.batches):
        await asyncio.sleep(0)
    for _ in range(5):
        await asyncio.sleep(0)
    assert done == []  # instance 1 finished, but its answer waits for the earlier batch
    first.gate.set()
    await asyncio.gather(*futures)
    assert done == [1, 2]
    await batcher.stop()


class Dead(Recorder):
    """An instance whose worker is gone."""

    @property
    def alive(self) -> bool:
        return False


def test_queued_requests_fail_when_no_instance_is_left() -> None:
    asyncio.run(asyncio.wait_for(_no_instance_left(), timeout=10))


async def _no_instance_left() -> None:
    batcher = create_scheduler(config(), 1, [Dead()], ModelStats())
    await batcher.start()
    with pytest.raises(WorkerCrashed, match="no instance of the model is running"):
        await batcher.submit(request(1, 1, start=True))
    assert batcher.pending == 0
    await batcher.stop()
