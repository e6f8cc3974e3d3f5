"""`tritonctl perf` on stateful models, as perf_analyzer drives them.

A model whose config has `sequence_batching` gets sequences instead of loose requests: each
closed-loop slot (concurrency = live sequences) sends one sequence after another, each of about
`--sequence-length` requests (perf_analyzer's +-20 % spread), the first with `sequence_start`,
the last with `sequence_end`, all with the slot's current `sequence_id`, taken from
`--sequence-id-range START[:END]` (ids wrap around at END). The prebuilt payloads stay as they
are; each request gets the three parameters added on its way out (`with_sequence`): gRPC appends
a ModelInferRequest holding only them (concatenated protobuf messages merge), HTTP rewrites the
JSON header's `parameters` and the lengths that depend on it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import orjson

SPREAD = 0.2  # perf_analyzer varies each sequence's length by up to 20 %


@dataclass(frozen=True)
class SequencePlan:
    """What a load process needs to send sequences (pickled into its WorkerJob)."""

    length: int = 20
    id_start: int = 1
    id_end: int = 0  # 0: no upper bound (2**63)


def is_sequence_model(config: object) -> bool:
    has_field = getattr(config, "HasField", None)
    return bool(has_field is not None and has_field("sequence_batching"))


def parse_id_range(text: str) -> tuple[int, int]:
    """`START[:END]` -> (start, end); end 0 means unbounded."""
    start_text, _, end_text = text.partition(":")
    start, end = int(start_text), int(end_text) if end_text else 0
    if start < 1 or (end and end < start):
        raise ValueError(f"--sequence-id-range {text!r}: ids start at 1 and END is not below START")
    return start, end


class SequenceSource:
    """The ids and lengths of one load process's sequences (its slots share it)."""

    def __init__(self, plan: SequencePlan, process: int, processes: int, seed: int) -> None:
        self.plan = plan
        self._next = plan.id_start + process
        self._step = max(1, processes)
        self._rng = random.Random(seed * 7919 + process)

    def new_sequence(self) -> tuple[int, int]:
        """(sequence id, length) of the next sequence to send."""
        plan = self.plan
        corrid = self._next
        self._next += self._step
        end = plan.id_end or (1 << 63)
        if self._next > end:
            self._next = plan.id_start + (self._next - end - 1) % max(1, end - plan.id_start + 1)
        spread = int(plan.length * SPREAD)
        length = max(1, plan.length + (self._rng.randint(-spread, spread) if spread else 0))
        return corrid, length


def with_sequence(payload: bytes, protocol: str, corrid: int, start: bool, end: bool) -> bytes:
    """`payload` (a prebuilt request) with sequence_id / sequence_start / sequence_end added."""
    if protocol == "grpc":
        return payload + _grpc_parameters(corrid, start, end)
    return _http_with_parameters(
        payload, {"sequence_id": corrid, "sequence_start": start, "sequence_end": end}
    )


def _grpc_parameters(corrid: int, start: bool, end: bool) -> bytes:
    from tritonclient.grpc import service_pb2

    extra = service_pb2.ModelInferRequest()
    extra.parameters["sequence_id"].int64_param = corrid
    extra.parameters["sequence_start"].bool_param = start
    extra.parameters["sequence_end"].bool_param = end
    data: bytes = extra.SerializeToString()
    return data


def _http_with_parameters(payload: bytes, parameters: dict[str, object]) -> bytes:
    head, _, body = payload.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    header_length = None
    for line in lines:
        if line.lower().startswith(b"inference-header-content-length:"):
            header_length = int(line.split(b":", 1)[1])
    json_part = body if header_length is None else body[:header_length]
    rest = b"" if header_length is None else body[header_length:]
    header = orjson.loads(json_part)
    header.setdefault("parameters", {}).update(parameters)
    new_json = orjson.dumps(header)
    new_body = new_json + rest
    rebuilt = []
    for line in lines:
        lower = line.lower()
        if lower.startswith(b"content-length:"):
            rebuilt.append(b"Content-Length: %d" % len(new_body))
        elif lower.startswith(b"inference-header-content-length:"):
            rebuilt.append(b"Inference-Header-Content-Length: %d" % len(new_json))
        else:
            rebuilt.append(line)
    return b"\r\n".join(rebuilt) + b"\r\n\r\n" + new_body
