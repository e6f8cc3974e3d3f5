"""Ctrl-C and SIGTERM end a rollout's hold at once: whatever SIGINT disposition the process
inherited, and whichever thread the kernel hands the signal to. Each test bounds the wait at
30 s and asserts it ended within a few: a missed signal fails instead of hanging the suite."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from tritonctl.rollout.interrupts import Interrupts, interrupts_deferred
from tritonctl.rollout.state import Phase

HOLD_S = 30.0
PROMPT_S = 5.0  # generous for a loaded machine; a missed signal waits the whole HOLD_S


@pytest.fixture
def interrupts() -> Iterator[Interrupts]:
    with Interrupts() as created:
        yield created


@pytest.fixture
def sigint_ignored() -> Iterator[None]:
    """As in a process a script started with `cmd &`: SIGINT arrives ignored."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def timed_sleep(interrupts: Interrupts) -> float:
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        interrupts.sleep(HOLD_S)
    return time.monotonic() - started


def signalled_hold(interrupts: Interrupts, signum: int, *, block_in_main_thread: bool = False) -> float:
    """Seconds a hold lasts when another thread signals this process as the hold begins.

    block_in_main_thread: the main thread blocks the signal, so the kernel hands it to the
    sender (as it may hand Ctrl-C to one of grpc's threads)."""
    sleeping = threading.Event()

    def send() -> None:
        sleeping.wait()
        os.kill(os.getpid(), signum)

    sender = threading.Thread(target=send)
    sender.start()  # before the mask changes: a new thread inherits its creator's mask
    if block_in_main_thread:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signum})
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):  # raised by the handler, wherever the main thread is
            sleeping.set()
            interrupts.sleep(HOLD_S)
    finally:
        if block_in_main_thread:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
        sender.join()
    return time.monotonic() - started


@pytest.mark.usefixtures("sigint_ignored")
def test_sigint_ends_the_hold_although_the_process_inherited_it_ignored(interrupts: Interrupts) -> None:
    with interrupts.installed():
        elapsed = signalled_hold(interrupts, signal.SIGINT)
    assert elapsed < PROMPT_S and interrupts.interrupted
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # put back as inherited


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_delivered_to_another_thread_wakes_the_hold(interrupts: Interrupts, signum: int) -> None:
    # A plain time.sleep in the main thread would sleep on: only the thread that takes a signal wakes.
    with interrupts.installed():
        elapsed = signalled_hold(interrupts, signum, block_in_main_thread=True)
    assert elapsed < PROMPT_S and interrupts.interrupted


def test_interrupt_from_another_thread_ends_the_hold_and_every_later_one(interrupts: Interrupts) -> None:
    sender = threading.Thread(target=interrupts.interrupt)
    sender.start()
    assert timed_sleep(interrupts) < PROMPT_S
    sender.join()
    assert timed_sleep(interrupts) < PROMPT_S  # a rollout that was told to stop does not hold again


def test_an_uninterrupted_sleep_just_waits(interrupts: Interrupts) -> None:
    interrupts.sleep(0.01)
    assert not interrupts.interrupted


def test_signals_during_the_rollback_only_leave_a_notice() -> None:
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    notices: list[Phase] = []
    with interrupts_deferred(lambda: notices.append(Phase.ROLLING_BACK)):
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.raise_signal(signum)  # handled synchronously in the main thread
    assert notices == [Phase.ROLLING_BACK, Phase.ROLLING_BACK]
    assert {signum: signal.getsignal(signum) for signum in before} == before
