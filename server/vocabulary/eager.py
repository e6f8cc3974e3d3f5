"""EagerFuture: an asyncio future whose `when_done` callbacks run the moment it gets its outcome.

asyncio runs done-callbacks a loop step later (call_soon). On the hot path a request's answer hops
through several futures (worker channel -> scheduler -> front end, or -> a BLS caller's worker),
and at every hop it waits behind whatever else is ready on the loop: other clients' new requests,
their answers. A BLS call crosses four such hops while its caller's instance sits idle. Callbacks
registered with `when_done` run inside `set_result` / `set_exception` instead; cancelling still
runs them a step later, as asyncio does (a cancel may come from inside the code that would run).

A `when_done` callback must not block; one that raises is reported to the loop's exception
handler, as a failing asyncio callback is, and the others still run. `await` and
`add_done_callback` behave as on any future.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

Callback = Callable[["asyncio.Future[Any]"], None]


class EagerFuture(asyncio.Future[T]):
    _eager: list[Callback] | None = None

    def when_done(self, callback: Callback) -> None:
        if self.done():
            callback(self)
        elif self._eager is None:
            self._eager = [callback]
        else:
            self._eager.append(callback)

    def set_result(self, result: T) -> None:
        super().set_result(result)
        self._run_eager()

    def set_exception(self, exception: type | BaseException) -> None:
        super().set_exception(exception)
        self._run_eager()

    def cancel(self, msg: Any | None = None) -> bool:
        if not super().cancel(msg):
            return False
        eager, self._eager = self._eager, None
        for callback in eager or ():
            self.get_loop().call_soon(callback, self)
        return True

    def _run_eager(self) -> None:
        eager, self._eager = self._eager, None
        for callback in eager or ():
            try:
                callback(self)
            except Exception as exc:
                self.get_loop().call_exception_handler(
                    {"message": "exception in an EagerFuture callback", "exception": exc, "future": self}
                )


def on_done(future: asyncio.Future[T], callback: Callback) -> None:
    """`callback` at once when `future` settles if it is eager, else a loop step later."""
    if isinstance(future, EagerFuture):
        future.when_done(callback)
    else:
        future.add_done_callback(callback)
