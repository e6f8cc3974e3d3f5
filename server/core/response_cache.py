"""The response cache: Triton's local cache (`--cache-config local,size=N`), per model
`response_cache { enable: true }`.

One cache for the whole server, bounded by bytes, least recently used entries evicted first. It sits
in the DataPlane before the scheduler: a hit answers at once, without queueing or executing; a
miss goes to the scheduler and its successful answer is stored.

The key is the whole request as the model sees it: model, version (and which load of it: a version
reloaded with new files starts afresh), the requested output names, the
request parameters that reach the model (not `priority` / `timeout`, which only schedule it) and
every input's name, datatype, shape and bytes, inputs ordered by name. Triton hashes only the
names and bytes into 64 bits and trusts the hash; here the key is a tuple held by a dict, so a hash
match is always confirmed by comparing the stored key with the request (names, types, shapes and
every byte): a collision costs a comparison, never another request's answer.

Only successful answers of models that can be cached are stored: not decoupled models, not
sequence-batched ones, ensembles only when every step (recursively) can be; a hit is not an
execution (statistics `cache_hit` / `cache_miss`, as Triton counts them: server/core/stats.py).
Models without a cache pay one `is None` test (no `--cache-config`) or one dict lookup
(`CachedModels.uses`) per request.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from server.errors import ServerError
from server.vocabulary.eager import on_done
from server.vocabulary.types import InferenceRequest, InferenceResult, Tensor

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2

    from server.core.model_version import LoadedVersion
    from server.core.stats import ModelStats

#: Request parameters that only schedule a request (queue policy): they never change its answer.
SCHEDULING_PARAMETERS = frozenset({"priority", "timeout"})
#: Bytes counted per entry and per tensor besides the tensor data (Python objects, names, shapes).
ENTRY_OVERHEAD = 256
TENSOR_OVERHEAD = 128
_BY_NAME = attrgetter("name")

CacheKey = tuple[Any, ...]
#: (model, version "" = its policy's choice) -> the READY version; raises ServerError.
VersionLookup = Callable[[str, str], "LoadedVersion"]


def _key_bytes(data: bytes | bytearray | memoryview) -> bytes | memoryview:
    """Data a key can hold: bytes as they are, a read-only byte view (hashed and compared in
    place, no copy), anything else copied to bytes."""
    if type(data) is bytes:
        return data
    if isinstance(data, memoryview) and data.readonly and data.format == "B" and data.c_contiguous:
        return data
    return bytes(data)


def request_key(request: InferenceRequest, generation: int = 0) -> CacheKey:
    """The cache key of a validated request whose version is resolved (see the module docstring).

    `generation` tells loads of the same version apart: a version reloaded with other files must
    not answer from what the previous load computed."""
    inputs = request.inputs
    if len(inputs) > 1:
        inputs = sorted(inputs, key=_BY_NAME)
    parameters = request.parameters
    params: tuple[tuple[str, str], ...] = ()
    if parameters:
        params = tuple(
            sorted(
                (key, repr(value)) for key, value in parameters.items() if key not in SCHEDULING_PARAMETERS
            )
        )
    outputs = request.outputs
    names = tuple([output.name for output in outputs]) if outputs else ()
    key: list[Any] = [(request.model, request.version, generation, names, params)]
    for tensor in inputs:
        data = tensor.data
        if type(data) is not bytes:
            data = _key_bytes(data)
        key.append((tensor.name, tensor.datatype, tuple(tensor.shape), data))
    return tuple(key)


def _stored_key(key: CacheKey) -> CacheKey:
    """The key with every input's data as bytes of its own (a view would pin the request body)."""
    head, *inputs = key
    return (head, *[(n, d, s, data if type(data) is bytes else bytes(data)) for n, d, s, data in inputs])


@dataclass(frozen=True, slots=True)
class _Entry:
    # (name, datatype, shape, data, parameters or None) per output, in the answer's order
    outputs: tuple[tuple[str, str, tuple[int, ...], bytes, dict[str, Any] | None], ...]
    parameters: dict[str, Any]
    size: int

    def answer(self, model: str, version: str, request_id: str) -> InferenceResult:
        """A fresh result (front ends rewrite outputs in place, e.g. classification)."""
        return InferenceResult(
            model,
            version,
            [
                Tensor(name, datatype, list(shape), data, dict(params) if params else {})
                for name, datatype, shape, data, params in self.outputs
            ],
            request_id,
            dict(self.parameters),
        )


def _entry(key: CacheKey, result: InferenceResult) -> _Entry:
    outputs = tuple(
        (
            t.name,
            t.datatype,
            tuple(t.shape),
            t.data if type(t.data) is bytes else bytes(t.data),
            dict(t.parameters) if t.parameters else None,
        )
        for t in result.outputs
    )
    size = ENTRY_OVERHEAD + sum(len(data) + TENSOR_OVERHEAD for *_, data in key[1:])
    size += sum(len(output[3]) + TENSOR_OVERHEAD for output in outputs)
    return _Entry(outputs, dict(result.parameters), size)


class ResponseCache:
    """Answers by request key, at most `capacity` bytes, least recently used evicted first."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("the response cache needs a positive size in bytes")
        self.capacity = capacity
        self.used = 0  # bytes of the entries held (data, keys and ENTRY/TENSOR_OVERHEAD)
        self.hits = 0
        self.misses = 0
        self.insertions = 0
        self.evictions = 0
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: CacheKey, model: str, version: str, request_id: str) -> InferenceResult | None:
        entry = self._entries.get(key)  # a hash match is confirmed by comparing the whole key
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return entry.answer(model, version, request_id)

    def insert(self, key: CacheKey, result: InferenceResult) -> bool:
        """Store `result` under `key`; False when it is larger than the whole cache."""
        entries = self._entries
        if key in entries:  # concurrent identical misses: the first answer stays
            entries.move_to_end(key)
            return True
        entry = _entry(key, result)
        if entry.size > self.capacity:
            return False
        while self.used + entry.size > self.capacity:
            _, evicted = entries.popitem(last=False)
            self.used -= evicted.size
            self.evictions += 1
        entries[_stored_key(key)] = entry
        self.used += entry.size
        self.insertions += 1
        return True

    def clear(self) -> None:
        self._entries.clear()
        self.used = 0


def supports_cache(config: model_config_pb2.ModelConfig, lookup: VersionLookup, depth: int = 0) -> bool:
    """Whether answers of a model with this config can be cached (Triton's limitations): not
    decoupled, not sequence-batched; an ensemble only when every step can be (they need not
    enable the cache themselves)."""
    if config.model_transaction_policy.decoupled or config.HasField("sequence_batching"):
        return False
    if config.platform != "ensemble":
        return True
    if depth > 32:  # a cycle (refused at load anyway)
        return False
    for step in config.ensemble_scheduling.step:
        version = "" if step.model_version < 0 else str(step.model_version)
        try:
            composing = lookup(step.model_name, version)
        except ServerError:
            return False
        if not supports_cache(composing.config, lookup, depth + 1):
            return False
    return True


def _scheduler_submit(loaded: LoadedVersion, request: InferenceRequest) -> asyncio.Future[InferenceResult]:
    return loaded.scheduler.submit(request)


class CachedModels:
    """The cache as the DataPlane uses it: which loaded versions use it, lookups and insertions."""

    def __init__(self, cache: ResponseCache, lookup: VersionLookup) -> None:
        self.cache = cache
        self._lookup = lookup
        # per loaded version (its ModelStats, one per LoadedVersion): (its config, its generation:
        # a number of its own in every key, 0 when it does not use the cache)
        self._uses: dict[ModelStats, tuple[Any, int]] = {}
        self._generations = 0

    def uses(self, loaded: LoadedVersion) -> int:
        """The loaded version's generation when its requests go through the cache, else 0
        (memoized per loaded version; a reload is a new LoadedVersion, so a new generation)."""
        known = self._uses.get(loaded.stats)
        if known is not None and known[0] is loaded.config:
            return known[1]
        config = loaded.config
        enabled = bool(config.response_cache.enable) and supports_cache(config, self._lookup)
        if len(self._uses) > 4096:  # versions unloaded long ago
            self._uses.clear()
        generation = 0
        if enabled:
            self._generations += 1
            generation = self._generations
        self._uses[loaded.stats] = (config, generation)
        loaded.stats.cache_enabled = enabled
        return generation

    def submit(
        self,
        loaded: LoadedVersion,
        request: InferenceRequest,
        schedule: Callable[[LoadedVersion, InferenceRequest], asyncio.Future[InferenceResult]],
    ) -> asyncio.Future[InferenceResult]:
        """Answer from the cache, or `schedule` the request and store its successful answer."""
        started = time.monotonic_ns()
        key = request_key(request, self.uses(loaded))
        stats = loaded.stats
        result = self.cache.lookup(key, request.model, request.version, request.id)
        if result is not None:
            now = time.monotonic_ns()
            stats.record_cache_hit(request_ns=now - request.arrival_ns, lookup_ns=now - started)
            future: asyncio.Future[InferenceResult] = asyncio.get_running_loop().create_future()
            future.set_result(result)
            return future
        stats.record_cache_miss(time.monotonic_ns() - started)
        future = schedule(loaded, request)
        # Registered before the front end's callbacks, and as eagerly as they are (on_done): the
        # answer is stored before anything (classification) rewrites it.
        on_done(future, lambda done: self._store(done, key, stats))
        return future

    async def run_step(self, target: Any, request: InferenceRequest) -> InferenceResult:
        """An ensemble step (EnsembleScheduler's StepRunner): through the cache when its model uses it."""
        if not self.uses(target):
            result: InferenceResult = await target.scheduler.infer(request)
            return result
        return await self.submit(target, request, _scheduler_submit)

    def _store(self, done: asyncio.Future[InferenceResult], key: CacheKey, stats: ModelStats) -> None:
        if done.cancelled() or done.exception() is not None:
            return
        started = time.monotonic_ns()
        self.cache.insert(key, done.result())
        stats.cache_miss_ns += time.monotonic_ns() - started
