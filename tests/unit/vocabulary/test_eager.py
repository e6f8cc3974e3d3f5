"""EagerFuture: `when_done` callbacks run inside set_result / set_exception, a step later on cancel."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from server.vocabulary.eager import EagerFuture, on_done


def test_when_done_runs_inside_set_result_and_set_exception_before_any_loop_step() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        seen: list[Any] = []
        ok: EagerFuture[int] = EagerFuture(loop=loop)
        ok.when_done(lambda f: seen.append(("first", f.result())))
        ok.when_done(lambda f: seen.append(("second", f.result())))
        ok.add_done_callback(lambda f: seen.append(("plain", f.result())))
        ok.set_result(7)
        assert seen == [("first", 7), ("second", 7)]  # eager ones, in order, at once
        await asyncio.sleep(0)
        assert seen[-1] == ("plain", 7)  # an ordinary callback a step later, as asyncio does

        failed: EagerFuture[int] = EagerFuture(loop=loop)
        failed.when_done(lambda f: seen.append(type(f.exception()).__name__))
        failed.set_exception(ValueError("no"))
        assert seen[-1] == "ValueError"
        failed.when_done(lambda f: seen.append("late"))  # already done: runs at once
        assert seen[-1] == "late"
        assert await ok == 7

    asyncio.run(scenario())


def test_a_raising_callback_is_reported_and_the_others_still_run() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        reported: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _, context: reported.append(context))
        ran: list[str] = []
        future: EagerFuture[None] = EagerFuture(loop=loop)
        future.when_done(lambda _: (_ for _ in ()).throw(RuntimeError("boom")))
        future.when_done(lambda _: ran.append("after"))
        future.set_result(None)  # does not raise into the code that settled it
        assert ran == ["after"]
        assert [str(context["exception"]) for context in reported] == ["boom"]

    asyncio.run(scenario())


def test_cancel_runs_the_callbacks_a_step_later_and_on_done_falls_back_for_plain_futures() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        seen: list[str] = []
        future: EagerFuture[None] = EagerFuture(loop=loop)
        future.when_done(lambda f: seen.append("eager cancelled" if f.cancelled() else "?"))
        assert future.cancel()
        assert seen == []  # not from inside cancel(): a cancel may come from the callback's own code
        await asyncio.sleep(0)
        assert seen == ["eager cancelled"]
        assert not future.cancel()

        plain: asyncio.Future[int] = loop.create_future()
        on_done(plain, lambda f: seen.append(f"plain {f.result()}"))
        plain.set_result(1)
        assert seen[-1] == "eager cancelled"
        await asyncio.sleep(0)
        assert seen[-1] == "plain 1"
        with pytest.raises(asyncio.CancelledError):
            await future

    asyncio.run(scenario())
