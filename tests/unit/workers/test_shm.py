"""Shared-memory segments, control records and descriptor passing (no worker process)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from server.errors import ConfigError
from server.workers.settings import WorkerOptions
from server.workers.shm import MAX_INLINE, Receiver, Segment, decode, encode, send, spill_size, spilled_arena


def shm_names() -> set[str]:
    shm = Path("/dev/shm")
    return {path.name for path in shm.iterdir()} if shm.is_dir() else set()


def test_segment_is_shared_through_its_descriptor_and_leaves_no_name() -> None:
    before = shm_names()
    segment = Segment.create("unit", 1000)
    assert segment.size >= 1000 and segment.size % 64 == 0
    segment.view[:5] = b"hello"
    other = Segment.attach(os.dup(segment.fd))
    assert bytes(other.view[:5]) == b"hello"
    after = shm_names()
    assert not {name for name in after - before if name.startswith("tritonctl_")}
    other.close()
    segment.close()
    segment.close()  # idempotent


def test_small_records_go_inline_large_ones_into_the_arena() -> None:
    record = {"op": "exec", "seq": 1}
    message = encode(record)
    assert message[:1] == b"J" and spilled_arena(message) is None and decode(message) == record

    big = {"op": "exec", "ids": ["x" * 100] * (MAX_INLINE // 50)}
    needed = spill_size(big)
    assert needed > MAX_INLINE
    arena = Segment.create("spill", needed + 128)
    message = encode(big, arena, 1, 128)
    assert message[:1] == b"A" and spilled_arena(message) == 1
    assert decode(message, [None, arena]) == big
    with pytest.raises(ValueError, match="does not fit"):
        encode(big, None)
    arena.close()


def test_descriptors_travel_with_messages_and_eof_is_seen() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    segment = Segment.create("fd", 64)
    segment.view[:3] = b"abc"
    send(left, encode({"n": 1}), [segment.fd])
    send(left, encode({"n": 2}))
    receiver = Receiver(right)
    first = receiver.receive()
    assert first is not None
    message, fds = first
    assert decode(message) == {"n": 1} and len(fds) == 1
    attached = Segment.attach(fds[0])
    assert bytes(attached.view[:3]) == b"abc"
    second = receiver.receive()
    assert second is not None and decode(second[0]) == {"n": 2} and second[1] == []
    left.close()
    assert receiver.receive() is None
    attached.close()
    segment.close()
    right.close()


def test_worker_options_read_tritons_backend_config_keys() -> None:
    assert WorkerOptions.from_backend_config({}).shm_default_size == WorkerOptions().shm_default_size
    options = WorkerOptions.from_backend_config(
        {"python": {"shm-default-size": "2147483648", "shm-growth-byte-size": "1024"}}
    )
    assert options.shm_default_size == 2147483648 and options.shm_growth_size == 1024
    assert (
        WorkerOptions.from_backend_config({"python": {"shm-default-byte-size": "4096"}}).shm_default_size
        == 4096
    )
    with pytest.raises(ConfigError, match="shm-default-size must be a byte count"):
        WorkerOptions.from_backend_config({"python": {"shm-default-size": "2GB"}})
    with pytest.raises(ConfigError, match="must be positive"):
        WorkerOptions.from_backend_config({"python": {"shm-growth-size": "0"}})
