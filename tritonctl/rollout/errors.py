"""Errors of `tritonctl rollout`, rooted in the one tree of server/errors.py.

ServerError
└── RolloutError          a rollout cannot start or cannot go on (nothing to roll back yet)
    ├── RolloutUsageError the flags do not make sense (the CLI exits 2)
    ├── GateFailed        a shadow or canary gate failed: the rollout rolls back
    └── NothingChanged    the server refused the first change: nothing to roll back
"""

from __future__ import annotations

from server.errors import ServerError


class RolloutError(ServerError):
    """A rollout cannot start or go on; the message says why and what to do."""


class RolloutUsageError(RolloutError):
    """A flag value is invalid or the flags contradict each other."""

    http_status = 400


class GateFailed(RolloutError):
    """The candidate version failed a gate (outputs, latency, errors, readiness)."""


class NothingChanged(RolloutError):
    """The server refused the rollout's first load (e.g. not in explicit mode); it is as it was."""
