"""LoadSettler: after a load, young garbage is collected and what survived is frozen; a cycle that
dies among frozen objects is found by the next full pass, not before it."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from server.vocabulary.collector import LoadSettler


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def _cycle() -> tuple[Node, weakref.ref[Node]]:
    first, second = Node(), Node()
    first.other, second.other = second, first
    return first, weakref.ref(first)


@pytest.fixture
def no_automatic_collection() -> Iterator[None]:
    gc.disable()
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.enable()


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.usefixtures("no_automatic_collection")
def test_settle_collects_young_garbage_then_freezes_what_survived() -> None:
    settler = LoadSettler(full_pass_every_s=60.0, clock=FakeClock())
    garbage, garbage_alive = _cycle()
    kept, _ = _cycle()
    del garbage
    frozen_before = gc.get_freeze_count()
    settler.settle()
    assert garbage_alive() is None  # collected, not frozen
    assert gc.get_freeze_count() > frozen_before
    assert not any(o is kept for o in gc.get_objects())  # frozen: no generation walks it
    assert kept.other is not None and kept.other.other is kept


@pytest.mark.usefixtures("no_automatic_collection")
def test_a_cycle_that_dies_frozen_waits_for_the_full_pass() -> None:
    clock = FakeClock()
    settler = LoadSettler(full_pass_every_s=60.0, clock=clock)
    model, model_alive = _cycle()
    settler.settle()  # the load that built `model` ends: frozen
    del model  # unloaded later, its parts still pointing at each other
    gc.collect()
    assert model_alive() is not None  # frozen: out of the collector's sight
    clock.now = 59.0
    settler.settle()
    assert model_alive() is not None and settler.full_passes == 0
    clock.now = 60.0
    settler.settle()
    assert model_alive() is None and settler.full_passes == 1
