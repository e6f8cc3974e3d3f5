"""A request's responses as a stream: 0..N responses, then a final flag (decoupled models).

The one-response case (every non-decoupled model) never builds one of these: its result travels in
the scheduler's future as before. A `ResponseStream` is made by the DataPlane for a request to a
decoupled model (or a BLS call that asks for a stream) and hangs on `InferenceRequest.stream`; the
instance that executes the request puts each response into it as the model sends it. Everything
here runs on the event loop's thread (in-process threads hop there with call_soon_threadsafe).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.errors import ServerError
    from server.vocabulary.types import InferenceResult

# (response or error or None for a flags-only final, final flag)
StreamItem = tuple["InferenceResult | ServerError | None", bool]


class ResponseStream:
    """The responses of one request, in the order the model sent them; ends with a final item.

    `put` after the final item is ignored, so a crash reported twice (the worker's socket and the
    scheduler's future) ends the stream once. `cancel()` (the client went away) runs the cancel
    hooks once: the request leaves its queue, the model's `is_cancelled()` turns true."""

    __slots__ = ("_items", "_waiter", "cancel_hooks", "cancelled", "finished", "on_item")

    def __init__(self, on_item: Callable[[StreamItem], None] | None = None) -> None:
        self._items: deque[StreamItem] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.finished = False
        self.cancelled = False
        self.cancel_hooks: list[Callable[[], None]] = []
        # Called for each item instead of queueing it (a consumer that writes straight to a socket).
        self.on_item = on_item

    def put(self, response: InferenceResult | ServerError | None, final: bool) -> None:
        if self.finished:
            return
        if final:
            self.finished = True
            # Nothing left to cancel; the hooks (-> request -> this stream) would keep a cycle.
            self.cancel_hooks = []
        if self.on_item is not None:
            self.on_item((response, final))
            return
        self._items.append((response, final))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        hooks, self.cancel_hooks = self.cancel_hooks, []
        for hook in hooks:
            hook()

    async def next(self) -> StreamItem:
        """The next item, waiting for it."""
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None
        return self._items.popleft()

    def __aiter__(self) -> AsyncIterator[StreamItem]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[StreamItem]:
        while True:
            item = await self.next()
            yield item
            if item[1]:
                return
