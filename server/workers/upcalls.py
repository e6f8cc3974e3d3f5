"""The seam through which a model calls other models (BLS): workers ask, the core answers.

Workers sit below the core, so they cannot call the DataPlane; the core installs an
`UpcallHandler` here when the DataPlane is built (core/upcalls.py), and the worker channels hand
it every call a model makes. The answers go into a ResponseStream: one final item for a model with
one response, 0..N and a final for a decoupled one.
"""

from __future__ import annotations

from typing import Protocol

from server.vocabulary.stream import ResponseStream
from server.vocabulary.types import InferenceRequest


class UpcallHandler(Protocol):
    def start(
        self,
        request: InferenceRequest,
        stream: ResponseStream,
        *,
        caller: str,
        decoupled: bool,
        timeout_s: float | None,
    ) -> None:
        """Run `request` as `caller`'s BLS call; every answer (errors too) goes into `stream`."""


_HANDLER: list[UpcallHandler | None] = [None]


def install_upcall_handler(handler: UpcallHandler | None) -> None:
    _HANDLER[0] = handler


def current_upcall_handler() -> UpcallHandler | None:
    return _HANDLER[0]
