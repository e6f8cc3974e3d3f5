"""The server raises its open-file limit (1,000 models need ~3,000 descriptors) and says when a
repository would not fit under the hard limit."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

from server.open_files import BASE_DESCRIPTORS, DESCRIPTORS_PER_INSTANCE, check_room_for

ROOT = Path(__file__).resolve().parents[2]


def _limit_after_raising(soft: int) -> int:
    """The soft limit a process started with `soft` holds after raise_open_file_limit()."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    code = (
        "import resource, server.open_files as o; o.raise_open_file_limit(); "
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, preexec_fn=lower, capture_output=True, text=True, check=True
    )
    return int(done.stdout)


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    expected = hard if hard != resource.RLIM_INFINITY else 1 << 20
    assert _limit_after_raising(256) == expected


def test_a_repository_that_cannot_fit_is_named_with_the_way_out() -> None:
    assert check_room_for(100, 1024) is None
    message = check_room_for(1000, 1024)
    assert message is not None
    assert f"need about {BASE_DESCRIPTORS + DESCRIPTORS_PER_INSTANCE * 1000} open files" in message
    assert "past about 320 instances" in message and "ulimit -Hn" in message
