"""ResponseCache and its key: what makes two requests the same, LRU by bytes, verified hits."""

from __future__ import annotations

from typing import Any

import pytest

from server.core import response_cache
from server.core.response_cache import ENTRY_OVERHEAD, TENSOR_OVERHEAD, ResponseCache, request_key
from server.vocabulary.types import InferenceRequest, InferenceResult, RequestedOutput, Tensor


def _request(*inputs: Tensor, outputs: tuple[str, ...] = (), **parameters: Any) -> InferenceRequest:
    return InferenceRequest(
        "m", "1", list(inputs), [RequestedOutput(name) for name in outputs], parameters=dict(parameters)
    )


def _tensor(
    name: str = "IN",
    data: bytes | bytearray | memoryview = b"\x00" * 8,
    shape: tuple[int, ...] = (2,),
    dt: str = "FP32",
) -> Tensor:
    return Tensor(name, dt, list(shape), data)


def _result(data: bytes = b"out!") -> InferenceResult:
    return InferenceResult("m", "1", [Tensor("OUT", "BYTES", [1], data, {"p": 1})], "first", {"r": "x"})


def test_key_tells_apart_datatype_shape_names_version_outputs_and_parameters() -> None:
    base = request_key(_request(_tensor()))
    assert request_key(_request(_tensor())) == base
    different = [
        _request(_tensor(dt="INT32")),
        _request(_tensor(shape=(1, 2))),
        _request(_tensor(name="OTHER")),
        _request(_tensor(data=b"\x01" + b"\x00" * 7)),
        _request(_tensor(), outputs=("OUT",)),
        _request(_tensor(), mode="fast"),
    ]
    for request in different:
        assert request_key(request) != base
    other_version = _request(_tensor())
    other_version.version = "2"
    assert request_key(other_version) != base


def test_key_ignores_scheduling_parameters_and_input_order() -> None:
    a, b = _tensor("A", b"a" * 4, (1,)), _tensor("B", b"b" * 4, (1,))
    assert request_key(_request(a, b)) == request_key(_request(b, a, priority=2, timeout=100))


def test_views_and_bytearrays_key_like_bytes() -> None:
    data = b"\x07" * 16
    as_view = memoryview(data)[:8]
    as_bytearray = bytearray(data[:8])
    keys = {request_key(_request(_tensor(data=d))) for d in (data[:8], as_view, as_bytearray)}
    assert len(keys) == 1


def test_hit_returns_a_fresh_copy_with_the_request_id() -> None:
    cache = ResponseCache(1 << 20)
    key = request_key(_request(_tensor()))
    assert cache.lookup(key, "m", "1", "a") is None
    assert cache.insert(key, _result())
    hit = cache.lookup(key, "m", "1", "second")
    assert hit is not None
    assert hit.id == "second" and hit.parameters == {"r": "x"}
    assert [(t.name, t.datatype, t.shape, bytes(t.data), t.parameters) for t in hit.outputs] == [
        ("OUT", "BYTES", [1], b"out!", {"p": 1})
    ]
    hit.outputs[0].shape, hit.outputs[0].data = [9], b"rewritten"  # what classification does
    hit.outputs[0].parameters["p"] = 2
    again = cache.lookup(key, "m", "1", "third")
    assert again is not None
    assert (again.outputs[0].shape, again.outputs[0].data, again.outputs[0].parameters) == (
        [1],
        b"out!",
        {"p": 1},
    )
    assert (cache.hits, cache.misses, cache.insertions) == (2, 1, 1)


def test_a_hash_collision_is_a_miss_not_another_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    class Colliding(bytes):
        def __hash__(self) -> int:
            return 42

    monkeypatch.setattr(response_cache, "_key_bytes", lambda data: Colliding(bytes(data)))
    monkeypatch.setattr(response_cache, "_stored_key", lambda key: key)
    first = request_key(_request(_tensor(data=bytearray(b"1" * 8))))
    second = request_key(_request(_tensor(data=bytearray(b"2" * 8))))
    assert hash(first) == hash(second) and first != second
    cache = ResponseCache(1 << 20)
    cache.insert(first, _result(b"one"))
    assert cache.lookup(second, "m", "1", "") is None
    hit = cache.lookup(first, "m", "1", "")
    assert hit is not None and hit.outputs[0].data == b"one"


def test_lru_by_bytes() -> None:
    entry_size = ENTRY_OVERHEAD + (8 + TENSOR_OVERHEAD) + (4 + TENSOR_OVERHEAD)
    cache = ResponseCache(entry_size * 2)
    keys = [request_key(_request(_tensor(data=bytes([n]) * 8))) for n in range(3)]
    cache.insert(keys[0], _result())
    cache.insert(keys[1], _result())
    assert cache.used == entry_size * 2
    assert cache.lookup(keys[0], "m", "1", "") is not None  # 0 is now the most recent
    cache.insert(keys[2], _result())
    assert cache.lookup(keys[1], "m", "1", "") is None  # the least recently used went
    assert cache.lookup(keys[0], "m", "1", "") is not None
    assert cache.lookup(keys[2], "m", "1", "") is not None
    assert (cache.evictions, len(cache), cache.used) == (1, 2, entry_size * 2)


def test_an_answer_larger_than_the_cache_is_not_stored() -> None:
    cache = ResponseCache(ENTRY_OVERHEAD + 100)
    key = request_key(_request(_tensor()))
    assert not cache.insert(key, _result(b"x" * 200))
    assert len(cache) == 0 and cache.used == 0


def test_stored_keys_do_not_pin_request_bodies() -> None:
    body = bytearray(b"\x05" * 8)
    cache = ResponseCache(1 << 20)
    cache.insert(request_key(_request(_tensor(data=memoryview(bytes(body))))), _result())
    (stored,) = list(cache._entries)
    assert all(type(part[3]) is bytes for part in stored[1:])
