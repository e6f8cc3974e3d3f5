"""Settings every worker process of the server shares."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

MIB = 1 << 20

# Triton spells the python backend's arena sizes two ways; the seed uses the first.
_DEFAULT_SIZE_KEYS = ("shm-default-size", "shm-default-byte-size")
_GROWTH_SIZE_KEYS = ("shm-growth-size", "shm-growth-byte-size")


@dataclass(frozen=True)
class WorkerOptions:
    # Initial size of each shared-memory arena of a worker (--backend-config=python,shm-default-size=N).
    # Pages are only backed by memory once touched, so a large value costs address space, not RAM.
    shm_default_size: int = 16 * MIB
    # An arena that is too small is replaced by one at least this much larger (shm-growth-byte-size).
    shm_growth_size: int = 16 * MIB
    # backend -> key -> value, from the server-level backend_config / --backend-config.
    backend_parameters: dict[str, dict[str, str]] = field(default_factory=dict)
    log_verbose: int = 0
    # False with --disable-auto-complete-config / --strict-model-config: python models'
    # auto_complete_config is then not called (as in Triton).
    auto_complete_config: bool = True
    # How long a worker may take to import its framework and load the model.
    load_timeout_s: float = 300.0
    # Batches a channel hands to its worker before waiting for an answer: 2 lets the main process
    # write batch k+1 while the worker computes batch k (benchmarks/channel_bench.py).
    max_in_flight: int = 2
    # Fork worker processes from a warm template per backend (host.py) instead of spawning a fresh
    # interpreter each: faster starts, shared pages. TRITONCTL_FORK_WORKERS=0 spawns them.
    fork_workers: bool = field(default_factory=lambda: os.environ.get("TRITONCTL_FORK_WORKERS", "1") != "0")

    @classmethod
    def from_backend_config(
        cls, backend_parameters: dict[str, dict[str, str]], log_verbose: int = 0
    ) -> WorkerOptions:
        """Read the arena sizes from the python backend's settings, as Triton does."""
        python = backend_parameters.get("python", {})
        default_size = _first_int(python, _DEFAULT_SIZE_KEYS, cls.shm_default_size)
        growth_size = _first_int(python, _GROWTH_SIZE_KEYS, cls.shm_growth_size)
        return cls(
            shm_default_size=default_size,
            shm_growth_size=growth_size,
            backend_parameters=backend_parameters,
            log_verbose=log_verbose,
        )


def _first_int(values: dict[str, str], keys: tuple[str, ...], default: int) -> int:
    for key in keys:
        if key in values:
            from server.errors import ConfigError

            try:
                number = int(values[key])
            except ValueError:
                raise ConfigError(
                    f"backend config python,{key} must be a byte count, not {values[key]!r}"
                ) from None
            if number <= 0:
                raise ConfigError(f"backend config python,{key} must be positive, not {number}")
            return number
    return default
