"""Where each field of a protobuf text-format document sits (line and column).

Python's `text_format` has no parse-info tree, so after a document parsed cleanly we walk its
tokens once more and record the position of every field occurrence under a path such as
`input[1].dims[0]`. Every segment carries the occurrence index among its siblings of the same
name: `max_batch_size[0]`, `instance_group[1].gpus[0]`. Lookups fall back to the nearest recorded
ancestor, so a problem with a field that is absent still points at the message that lacks it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN = re.compile(
    r"""
      (?P<space>[ \t\r\f\v]+)
    | (?P<newline>\n)
    | (?P<comment>\#[^\n]*)
    | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
    | (?P<word>[-+]?(?:0[xX][0-9a-fA-F]+|[0-9.][0-9.]*(?:[eE][-+]?[0-9]+)?[fF]?|[A-Za-z_][\w.]*))
    | (?P<punct>[{}\[\]<>:,;/])
    | (?P<other>.)
    """,
    re.VERBOSE,
)
_SEGMENT = re.compile(r"^(?P<name>[^\[\]]+)(?:\[(?P<index>\d+)\])?$")


@dataclass(frozen=True)
class Position:
    line: int  # 1-based
    column: int  # 1-based


@dataclass(frozen=True)
class _Token:
    text: str
    kind: str
    position: Position


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    line, line_start = 1, 0
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup or "other"
        if kind == "newline":
            line, line_start = line + 1, match.end()
            continue
        if kind in ("space", "comment"):
            continue
        tokens.append(_Token(match.group(), kind, Position(line, match.start() - line_start + 1)))
    return tokens


def normalize_path(path: str) -> str:
    """`input.dims[1]` -> `input[0].dims[1]`: every segment gets an explicit index."""
    parts = []
    for segment in path.split(".") if path else []:
        match = _SEGMENT.match(segment)
        if match is None:
            raise ValueError(f"bad field path segment {segment!r} in {path!r}")
        parts.append(f"{match['name']}[{match['index'] or 0}]")
    return ".".join(parts)


@dataclass
class Locations:
    """Field path -> position of that occurrence in one text-format document."""

    positions: dict[str, Position] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)  # scalar occurrences: text, quotes removed

    def find(self, path: str) -> Position | None:
        """Position of `path`, else of its nearest recorded ancestor, else None."""
        parts = normalize_path(path).split(".") if path else []
        while parts:
            found = self.positions.get(".".join(parts))
            if found is not None:
                return found
            parts.pop()
        return None

    def count(self, path: str) -> int:
        """How many occurrences of the repeated field `path` (last segment without index) exist."""
        parent, _, name = path.rpartition(".")
        prefix = f"{normalize_path(parent)}." if parent else ""
        index = 0
        while f"{prefix}{name}[{index}]" in self.positions:
            index += 1
        return index

    def subtree(self, prefix: str) -> Locations:
        """The locations under `prefix` (e.g. one model inside the server config), re-rooted."""
        root = normalize_path(prefix) + "."
        return Locations(
            {key[len(root) :]: pos for key, pos in self.positions.items() if key.startswith(root)},
            {key[len(root) :]: text for key, text in self.values.items() if key.startswith(root)},
        )

    def map_entry(self, path: str, key: str) -> str:
        """The path of the entry of map field `path` whose key is `key` (or `path` if not found)."""
        parent, _, name = path.rpartition(".")
        prefix = f"{normalize_path(parent)}." if parent else ""
        for index in range(self.count(path)):
            entry = f"{prefix}{name}[{index}]"
            if self.values.get(f"{entry}.key[0]") == key:
                return entry
        return path


class _Walker:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.index = 0
        self.positions: dict[str, Position] = {}
        self.values: dict[str, str] = {}

    def peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def take_if(self, *texts: str) -> bool:
        token = self.peek()
        if token is not None and token.kind == "punct" and token.text in texts:
            self.index += 1
            return True
        return False

    def body(self, prefix: str, closers: tuple[str, ...]) -> None:
        counts: dict[str, int] = {}
        while (token := self.peek()) is not None:
            if token.kind == "punct" and token.text in closers:
                return
            name_token = self.take()
            name = name_token.text
            if name_token.text == "[":  # an extension or Any type name: `[pkg.Name]`
                parts = []
                while (inner := self.take()).text != "]":
                    parts.append(inner.text)
                name = "[" + "".join(parts) + "]"
            self.take_if(":")
            if self.take_if("["):
                while not self.take_if("]"):
                    self.occurrence(prefix, name, counts, self.peek() or name_token)
                    self.take_if(",")
            else:
                self.occurrence(prefix, name, counts, name_token)
            self.take_if(",", ";")

    def occurrence(self, prefix: str, name: str, counts: dict[str, int], anchor: _Token) -> None:
        index = counts.get(name, 0)
        counts[name] = index + 1
        path = f"{prefix}{name}[{index}]"
        self.positions[path] = anchor.position
        if self.take_if("{"):
            self.body(path + ".", ("}",))
            self.take_if("}")
        elif self.take_if("<"):
            self.body(path + ".", (">",))
            self.take_if(">")
        else:
            self.values[path] = self.scalar()

    def scalar(self) -> str:
        token = self.peek()
        if token is None:
            return ""
        self.take()
        if token.kind != "string":
            return token.text
        text = token.text[1:-1]
        while (nxt := self.peek()) is not None and nxt.kind == "string":  # adjacent strings concatenate
            text += self.take().text[1:-1]
        return text


def index_text(text: str) -> Locations:
    """Record the position of every field occurrence of a document that `text_format` accepted."""
    walker = _Walker(_tokenize(text))
    walker.body("", ())
    return Locations(walker.positions, walker.values)
