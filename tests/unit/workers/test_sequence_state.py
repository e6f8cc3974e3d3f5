"""Implicit state in the worker (SequenceBackend): per slot, reset by START, forgotten at END,
untouched by null rows, never shown to the client; initial state from zero_data or a data file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from server.backends.base import Backend, BackendContext, Batch, OutputArray, Request, RequestInput
from server.workers.sequence_state import FLAG_END, FLAG_NULL, FLAG_START, SequenceBackend


def config(initial: str = "zero_data: true") -> mc.ModelConfig:
    return text_format.Parse(
        f"""name: "acc" max_batch_size: 4
        input {{ name: "INPUT" data_type: TYPE_INT32 dims: [1] }}
        output {{ name: "OUTPUT" data_type: TYPE_INT32 dims: [1] }}
        sequence_batching {{ state {{ input_name: "S_IN" output_name: "S_OUT" data_type: TYPE_INT32 dims: [1]
          initial_state {{ name: "init" data_type: TYPE_INT32 dims: [1] {initial} }} }} }}""",
        mc.ModelConfig(),
    )


class Adder(Backend):
    """OUTPUT = S_OUT = S_IN + INPUT, for each request (and it records what it was asked for)."""

    def load(self) -> None:
        self.asked: list[list[str]] = []

    def execute(self, batch: Batch) -> list[Any]:
        results = []
        for request in batch.requests:
            self.asked.append(list(request.requested_outputs))
            total = request.inputs["S_IN"].to_numpy() + request.inputs["INPUT"].to_numpy()
            results.append({"OUTPUT": OutputArray(total.copy()), "S_OUT": OutputArray(total.copy())})
        assert batch.inputs["S_IN"].stacked() is not None  # the batched view exists too
        return results


def backend(tmp_path: Path, model_config: mc.ModelConfig) -> SequenceBackend:
    context = BackendContext("acc", 1, tmp_path, model_config, "acc_0", "KIND_CPU", None, {})
    wrapped = SequenceBackend(Adder(context))
    wrapped.load()
    return wrapped


def row(value: int, slot: int, flags: int) -> Request:
    data = memoryview(np.array([[value]], np.int32).tobytes())
    parameters = {"_sequence_slot": slot, "_sequence_flags": flags, "sequence_id": 7}
    return Request("", {"INPUT": RequestInput("INPUT", "INT32", [1, 1], data)}, ["OUTPUT"], parameters)


def run(wrapped: SequenceBackend, *rows: Request) -> list[int]:
    from server.backends.base import BatchInput

    data = b"".join(bytes(r.inputs["INPUT"].data) for r in rows)
    batch = Batch(list(rows), {"INPUT": BatchInput("INPUT", "INT32", [[1, 1]] * len(rows), memoryview(data))})
    results = wrapped.execute(batch)
    for request, result in zip(rows, results, strict=True):
        assert "S_OUT" not in result and request.requested_outputs == ["OUTPUT"]  # never the client's
        assert "_sequence_slot" not in request.parameters
    return [int(result["OUTPUT"].array.reshape(-1)[0]) for result in results]


def test_state_flows_per_slot_and_start_end_and_null_rows_behave(tmp_path: Path) -> None:
    wrapped = backend(tmp_path, config())
    assert run(wrapped, row(5, 0, FLAG_START), row(1, 1, FLAG_START)) == [5, 1]
    assert run(wrapped, row(2, 0, 0), row(9, -1, FLAG_NULL)) == [7, 9]  # null row: initial state
    assert run(wrapped, row(3, 0, 0), row(1, 1, FLAG_END)) == [10, 2]
    assert run(wrapped, row(4, 1, 0)) == [4]  # slot 1's state was forgotten at END
    assert run(wrapped, row(1, 0, FLAG_START)) == [1]  # START begins from the initial state again
    inner = wrapped.inner
    assert isinstance(inner, Adder) and all("S_OUT" in asked for asked in inner.asked)


def test_initial_state_from_a_data_file(tmp_path: Path) -> None:
    (tmp_path / "initial_state").mkdir()
    (tmp_path / "initial_state" / "hundred").write_bytes(np.array([100], np.int32).tobytes())
    wrapped = backend(tmp_path, config('data_file: "hundred"'))
    assert run(wrapped, row(5, 0, FLAG_START)) == [105]
