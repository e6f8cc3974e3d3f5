"""Errors of the client-side tools (perf, tune), rooted in the one tree of server/errors.py.

ServerError
└── PerfError            a perf or tune run cannot go on (the server refused, nothing succeeded ...)
    ├── PerfUsageError   the flags do not make sense (the CLI prints it as a usage error, exit 2)
    └── ModelControlRefused  the server refused the repository load API (not in explicit mode)
"""

from __future__ import annotations

from server.errors import ServerError


class PerfError(ServerError):
    """A perf or tune run cannot go on; the message says why and what to do."""


class PerfUsageError(PerfError):
    """A flag value is invalid or flags contradict each other."""

    http_status = 400


class ModelControlRefused(PerfError):
    """The server refused to (re)load a model over the repository API."""
