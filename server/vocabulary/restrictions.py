"""Restricted-API groups and the flags that name them (`--http-restricted-api`,
`--grpc-restricted-protocol`): parsed here, where the server's options can check them at start-up;
the front ends' checks of each request are in server/protocol/restricted.py."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from server.errors import ConfigError

CATEGORIES = (
    "health",
    "metadata",
    "inference",
    "shared-memory",
    "model-config",
    "model-repository",
    "statistics",
    "trace",
    "logging",
)
GRPC_HEADER_PREFIX = "triton-grpc-protocol-"


@dataclass(frozen=True, slots=True)
class Restriction:
    """The header (as the user spelled it) and the value a restricted call must carry."""

    header: str
    value: str

    @property
    def key(self) -> str:
        """The header name as HTTP/2 and our HTTP parser deliver it: lower case."""
        return self.header.lower()


Restrictions = Mapping[str, Restriction]  # category -> restriction


def parse_restrictions(
    entries: Sequence[str], *, flag: str, header_prefix: str = ""
) -> dict[str, Restriction]:
    """`GROUP[,GROUP...]:KEY=VALUE` entries -> category -> Restriction; ConfigError when malformed."""
    kind = "protocol" if header_prefix else "api"
    restrictions: dict[str, Restriction] = {}
    for entry in entries:
        groups, colon, setting = entry.partition(":")
        key, equals, value = setting.partition("=")
        if not colon or not equals or not groups.strip() or not key.strip():
            raise ConfigError(
                f"{flag} '{entry}' must look like <group>[,<group>...]:<key>=<value> "
                f"(groups: {', '.join(CATEGORIES)})"
            )
        restriction = Restriction(header_prefix + key.strip(), value)
        for group in (part.strip() for part in groups.split(",")):
            if group not in CATEGORIES:
                raise ConfigError(
                    f"unknown restricted {kind} '{group}' in {flag} (choose from {', '.join(CATEGORIES)})"
                )
            if group in restrictions:
                raise ConfigError(
                    f"restricted {kind} '{group}' can not be specified in multiple config groups"
                )
            restrictions[group] = restriction
    return restrictions
