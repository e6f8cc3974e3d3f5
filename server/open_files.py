"""The open-file limit: many models need many descriptors.

Each loaded instance costs the main process about three descriptors (its control socket, its
side link, its arenas' memfds; a shared host holds as many again), so 1,000 models already pass
the 1,024 that many shells and services start with. The soft limit is raised to the hard limit at
start-up (what nginx's worker_rlimit_nofile and Go's runtime do), worker and host processes
inherit it, and a repository that would still not fit is said to at start-up.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

DESCRIPTORS_PER_INSTANCE = 3  # measured: 3,017 in the main process with 1,000 hosted models
BASE_DESCRIPTORS = 64  # listeners, logs, the interpreter's own
_MACOS_OPEN_MAX = 10240  # setrlimit refuses more than OPEN_MAX there, even under an unlimited hard limit


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target <= soft:
        return soft
    for candidate in (target, min(target, _MACOS_OPEN_MAX)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (candidate, hard))
        except (ValueError, OSError):
            continue
        log.debug("open files limit raised from %d to %d", soft, candidate)
        return candidate
    return soft


def open_file_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def check_room_for(instances: int, limit: int) -> str | None:
    """A warning when `instances` would need more descriptors than `limit`, else None."""
    needed = BASE_DESCRIPTORS + DESCRIPTORS_PER_INSTANCE * instances
    if needed <= limit:
        return None
    return (
        f"the repository's {instances} model instance(s) need about {needed} open files, more than this "
        f"process may open ({limit}); loads will fail with 'Too many open files' past about "
        f"{max(0, (limit - BASE_DESCRIPTORS) // DESCRIPTORS_PER_INSTANCE)} instances: raise the hard limit "
        "(ulimit -Hn, LimitNOFILE= in a systemd unit, --ulimit nofile= for docker)"
    )
