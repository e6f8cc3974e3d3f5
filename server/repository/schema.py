"""config.pbtxt, the one schema: tritonclient's `inference.ModelConfig`, parsed with `text_format`.

Parse errors become a `ConfigError` carrying one `Diagnostic` that names the file, line and column
and says, in plain words, what was expected there (instead of "Expected integer, got: $").
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pool, text_format
from google.protobuf.message import Message
from tritonclient.grpc import model_config_pb2

from server.errors import ConfigError
from server.repository.diagnostics import Diagnostic, error, summarize
from server.repository.locations import Locations, index_text

ModelConfig = model_config_pb2.ModelConfig

_PREFIX = re.compile(r"^\d+:\d+ : (?:'.*?': )?")
_UNKNOWN_FIELD = re.compile(r'Message type "(?P<type>[\w.]+)" has no field named "(?P<name>[^"]+)"')
_BAD_ENUM = re.compile(r'Enum type "(?P<type>[\w.]+)" has no value named (?P<value>\S+?)\.?$')
_DUPLICATE = re.compile(r'Message type "(?P<type>[\w.]+)" should not have multiple "(?P<name>\w+)" fields')
_ONEOF = re.compile(
    r'Field "(?P<name>\w+)" is specified along with field "(?P<other>\w+)", another member of oneof '
    r'"\w+" for message type "(?P<type>[\w.]+)"'
)
_WRONG_TYPE = (
    (re.compile(r"Couldn't parse integer: (?P<got>.*)"), "a whole number"),
    (re.compile(r"Expected integer, got: (?P<got>.*)"), "a whole number"),
    (re.compile(r"Couldn't parse float: (?P<got>.*)"), "a number"),
    (re.compile(r"Expected float, got: (?P<got>.*)"), "a number"),
    (re.compile(r"Expected string but found: (?P<got>.*)"), 'a quoted string like "text"'),
    (re.compile(r"Value out of range: (?P<got>.*)"), "a number in the field's range"),
    (re.compile(r"Couldn't parse boolean: (?P<got>.*)"), "true or false"),
    (re.compile(r"Invalid value for boolean field .*?: (?P<got>.*)"), "true or false"),
)
_EXPECTED_FIELD = re.compile(r"Expected identifier or number, got (?P<got>.*?)\.?$")
_FIELD_BEFORE = re.compile(r"([A-Za-z_]\w*)\s*:?\s*(?:\[[^\[\]{}]*)?$")


def _short_type(full_name: str) -> str:
    return full_name.rsplit(".", 1)[-1]


def _closest(word: str, choices: list[str]) -> str | None:
    matches = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return matches[0] if matches else None


def _field_before(text: str, line: int, column: int) -> str | None:
    """The field name whose value sits at (line, column): the last `name:` before it."""
    lines = text.split("\n")
    before = "\n".join([*lines[: line - 1], lines[line - 1][: column - 1] if line <= len(lines) else ""])
    match = _FIELD_BEFORE.search(before.rstrip())
    return match.group(1) if match else None


def _explain(reason: str, text: str, line: int, column: int) -> tuple[str, str, str]:
    """(code, message, fix) in plain words for one `text_format` error message."""
    pool = descriptor_pool.Default()
    if match := _UNKNOWN_FIELD.search(reason):
        names = [f.name for f in pool.FindMessageTypeByName(match["type"]).fields]
        guess = _closest(match["name"], names)
        fix = f'did you mean "{guess}"?' if guess else f"remove it; valid fields are: {', '.join(names)}"
        return (
            "E101-unknown-field",
            f'unknown field "{match["name"]}" in {_short_type(match["type"])}',
            fix,
        )
    if match := _BAD_ENUM.search(reason):
        values = [v.name for v in pool.FindEnumTypeByName(match["type"]).values]
        guess = _closest(match["value"], values)
        hint = f"did you mean {guess}? " if guess else ""
        return (
            "E102-bad-enum-value",
            f"{match['value']} is not a valid {_short_type(match['type'])} value",
            f"{hint}use one of: {', '.join(values)}",
        )
    if match := _DUPLICATE.search(reason):
        return (
            "E104-duplicate-field",
            f'field "{match["name"]}" is set more than once in {_short_type(match["type"])}',
            "keep a single value for it (only repeated fields such as input or dims may repeat)",
        )
    if match := _ONEOF.search(reason):
        return (
            "E105-conflicting-fields",
            f'"{match["name"]}" and "{match["other"]}" cannot both be set in {_short_type(match["type"])}',
            "keep only one of them",
        )
    for pattern, expected in _WRONG_TYPE:
        if match := pattern.search(reason):
            name = _field_before(text, line, column)
            subject = f'field "{name}"' if name else "this field"
            return (
                "E103-wrong-type",
                f"{subject} expects {expected}, got {match['got'].strip()}",
                f"write {expected} as the value",
            )
    if match := _EXPECTED_FIELD.search(reason):
        return (
            "E100-syntax",
            f"syntax error: expected a field name here, got {match['got']}",
            'check for a missing "}" or "]", or a stray character, just before this position',
        )
    plain = reason.rstrip(".")
    return (
        "E100-syntax",
        f"syntax error: {plain[0].lower()}{plain[1:]}" if plain else "syntax error",
        "check the braces, brackets, colons and quotes just before this position",
    )


def parse_error_diagnostic(exc: text_format.ParseError, text: str, path: str) -> Diagnostic:
    line, column = exc.GetLine(), exc.GetColumn()
    reason = _PREFIX.sub("", str(exc))
    code, message, fix = _explain(reason, text, line or 1, column or 1)
    return error(code, message, fix, file=path, line=line, column=column)


def parse_text(text: str, message: Message, path: str) -> None:
    """Merge `text` into `message`; raises ConfigError with a Diagnostic."""
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        diagnostic = parse_error_diagnostic(exc, text, path)
        raise ConfigError(summarize([diagnostic]), [diagnostic]) from None


def parse_model_config(text: str, path: str = "config.pbtxt") -> Any:
    """Parse config.pbtxt text into `inference.ModelConfig`; raises ConfigError with a Diagnostic."""
    config = ModelConfig()
    parse_text(text, config, path)
    return config


@dataclass
class ConfigSource:
    """Where a model's config text came from, to point diagnostics at lines.

    Positions are indexed from `text` on first use: most configs never need one, and indexing
    costs about as much as parsing.
    """

    file: str
    index: Locations | None = None
    text: str | None = field(default=None, repr=False)

    @property
    def locations(self) -> Locations:
        if self.index is None:
            self.index = index_text(self.text) if self.text is not None else Locations()
        return self.index

    def where(self, path: str = "") -> dict[str, Any]:
        """Keyword arguments (file, line, column) for a Diagnostic about field `path`."""
        position = self.locations.find(path) if path else None
        return {
            "file": self.file,
            "line": position.line if position else None,
            "column": position.column if position else None,
        }


def parse_model_config_file(path: Path) -> tuple[Any, ConfigSource]:
    """Read and parse one config.pbtxt; the config and where its fields are."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        diagnostic = error(
            "E110-unreadable-config",
            f"cannot read the config file: {exc}",
            "make sure the file exists, is readable and is UTF-8 text",
            file=str(path),
        )
        raise ConfigError(summarize([diagnostic]), [diagnostic]) from None
    config = ModelConfig()
    parse_text(text, config, str(path))
    return config, ConfigSource(str(path), text=text)
