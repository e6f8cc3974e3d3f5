"""What both fuzzers share: the short deterministic run's settings and the byte mutator."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# The in-suite run: 200 cases, the same every time (`make fuzz` runs the long random one).
SHORT = settings(
    max_examples=200,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


def mutate_bytes(draw: st.DrawFn, data: bytes, max_run: int) -> bytes:
    """`data` with 1-4 bytes flipped, runs of up to `max_run` bytes cut out or inserted."""
    mutated = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, max(len(mutated) - 1, 0)))
        operation = draw(st.integers(0, 2))
        if operation == 0 and mutated:
            mutated[position] = draw(st.integers(0, 255))
        elif operation == 1:
            del mutated[position : position + draw(st.integers(1, max_run))]
        else:
            mutated[position:position] = draw(st.binary(min_size=1, max_size=max_run))
    return bytes(mutated)
