"""Lingering close (server/protocol/http/linger.py): bounded in bytes and in time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from server.protocol.http.linger import LINGER_MAX_BODY, LINGER_SECONDS, LINGER_SLACK, Linger, linger_budget


class FakeTransport:
    def __init__(self, can_write_eof: bool = True) -> None:
        self.calls: list[str] = []
        self._can_write_eof = can_write_eof

    def can_write_eof(self) -> bool:
        return self._can_write_eof

    def write_eof(self) -> None:
        self.calls.append("write_eof")

    def close(self) -> None:
        self.calls.append("close")

    def pause_reading(self) -> None:
        self.calls.append("pause_reading")


class FakeLoop:
    def __init__(self) -> None:
        self.timers: list[tuple[float, Callable[[], Any]]] = []

    def call_later(self, delay: float, callback: Callable[[], Any]) -> asyncio.TimerHandle:
        self.timers.append((delay, callback))
        return cast(asyncio.TimerHandle, FakeTimer())


class FakeTimer:
    cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def make(budget: int, can_write_eof: bool = True) -> tuple[Linger, FakeTransport, FakeLoop]:
    transport = FakeTransport(can_write_eof)
    return Linger(cast(asyncio.Transport, transport), budget), transport, FakeLoop()


def test_budget_is_the_declared_rest_capped_plus_slack() -> None:
    assert linger_budget(None) == LINGER_SLACK
    assert linger_budget(10) == 10 + LINGER_SLACK
    assert linger_budget(1 << 40) == LINGER_MAX_BODY + LINGER_SLACK


def test_after_the_answer_it_half_closes_and_closes_after_the_time_limit() -> None:
    linger, transport, loop = make(100)
    linger.answered(cast(asyncio.AbstractEventLoop, loop))
    assert transport.calls == ["write_eof"]
    [(delay, callback)] = loop.timers
    assert delay == LINGER_SECONDS
    linger.discard(b"x" * 100)  # within the budget: dropped, the connection stays
    assert transport.calls == ["write_eof"]
    callback()
    assert transport.calls == ["write_eof", "close"]


def test_past_the_budget_it_closes() -> None:
    linger, transport, loop = make(100)
    linger.answered(cast(asyncio.AbstractEventLoop, loop))
    linger.discard(b"x" * 101)
    assert transport.calls == ["write_eof", "close"]


def test_past_the_budget_before_the_answer_it_stops_reading_then_closes_on_answering() -> None:
    linger, transport, loop = make(100)
    linger.discard(b"x" * 101)
    assert transport.calls == ["pause_reading"]
    linger.answered(cast(asyncio.AbstractEventLoop, loop))
    assert transport.calls == ["pause_reading", "close"]
    assert not loop.timers


def test_a_transport_without_half_close_is_closed_at_once() -> None:
    linger, transport, loop = make(100, can_write_eof=False)
    linger.answered(cast(asyncio.AbstractEventLoop, loop))
    assert transport.calls == ["close"]
