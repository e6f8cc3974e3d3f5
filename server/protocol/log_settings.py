"""Triton's logging extension: `GET/POST /v2/logging` and gRPC `LogSettings`, over Python logging.

The settings are Triton's: `log_info`, `log_warning`, `log_error` (whether messages of that
severity are written), `log_verbose_level` (0: none; 1: every request, its model, id and outcome,
see request_log.py, and the server's own debug messages; 2 and more: the libraries' debug
messages too, HTTP/2 frames included) and `log_format` (`default` or `ISO8601`). `log_file` is
reported but never settable over the network (CVE-2024-0087: a client could otherwise make the
server write wherever it may), as in Triton: HTTP 501 / gRPC UNIMPLEMENTED with Triton's words; it
is set only by `--log-file` at start-up.

A change applies to the server process at once (handlers, levels, the request log's flag);
instances already running keep the verbose level they were started with.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, TextIO

from server.errors import InvalidInput, Unsupported
from server.protocol.request_log import REQUEST_LOG

LOG_FORMATS = ("default", "ISO8601")
LOG_FILE_REFUSAL = "log file location can not be updated through network protocol"  # Triton's words
_FORMAT = "%(asctime)s %(levelname).1s %(name)s: %(message)s"
# Libraries whose debug messages only show from verbose level 2 (hpack logs every header at DEBUG).
_CHATTY = ("asyncio", "grpc", "hpack", "h2", "urllib3", "httptools")


@dataclass(frozen=True)
class LogSettings:
    """Triton's log settings, in the order Triton answers them."""

    log_file: str = ""
    log_info: bool = True
    log_warning: bool = True
    log_error: bool = True
    log_verbose_level: int = 0
    log_format: str = "default"


class _Iso8601Formatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


class _SeverityFilter(logging.Filter):
    """Drops info / warning / error records when their setting is off."""

    def __init__(self) -> None:
        super().__init__()
        self.info = self.warning = self.error = True

    def filter(self, record: logging.LogRecord) -> bool:
        level = record.levelno
        if level >= logging.ERROR:
            return self.error
        if level >= logging.WARNING:
            return self.warning
        if level >= logging.INFO:
            return self.info
        return True  # debug records are let through by the loggers' levels (verbose level)


class LogControl:
    """The process's log settings and the one handler that writes them out."""

    def __init__(self) -> None:
        self.settings = LogSettings()
        self._filter = _SeverityFilter()
        self._handler: logging.Handler | None = None

    def configure(
        self, settings: LogSettings, stream: TextIO | None = None, *, whole_process: bool = False
    ) -> None:
        """Start-up (app.py): install the handler (`log_file`, else stderr) and apply `settings`.

        `whole_process`: a `log_file` also becomes the process's stderr (file descriptor 2), so what
        the instances' processes inherit and write (pb_utils.Logger) lands there too, as in Triton."""
        root = logging.getLogger()
        if self._handler is not None:
            root.removeHandler(self._handler)
            self._handler.close()
        handler: logging.Handler
        if settings.log_file and whole_process:
            descriptor = os.open(settings.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            sys.stderr.flush()
            os.dup2(descriptor, 2)
            os.close(descriptor)
            handler = logging.StreamHandler(sys.stderr)
        elif settings.log_file:
            handler = logging.FileHandler(settings.log_file, encoding="utf-8")
        else:
            handler = logging.StreamHandler(stream or sys.stderr)
        handler.addFilter(self._filter)
        root.addHandler(handler)
        self._handler = handler
        self._apply(settings)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self.settings)

    def update(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Apply the settings a client sent (all checked before any applies); the new settings.

        Raises Unsupported for `log_file` and InvalidInput for a value of the wrong type; names
        Triton does not know are ignored, as Triton does."""
        if "log_file" in changes:
            raise Unsupported(LOG_FILE_REFUSAL)
        values: dict[str, Any] = {}
        for name in ("log_info", "log_warning", "log_error"):
            if name in changes and changes[name] is not None:
                value = changes[name]
                if not isinstance(value, bool):
                    raise InvalidInput(f"'{name}' must be a boolean, got {value!r}")
                values[name] = value
        level = changes.get("log_verbose_level")
        if level is not None:
            if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 0xFFFFFFFF:
                raise InvalidInput(f"'log_verbose_level' must be an unsigned integer, got {level!r}")
            values["log_verbose_level"] = level
        log_format = changes.get("log_format")
        if log_format is not None:
            if log_format not in LOG_FORMATS:
                raise InvalidInput(f"invalid argument for --log_format, got: {log_format}")
            values["log_format"] = log_format
        self._apply(replace(self.settings, **values))
        return self.as_dict()

    def _apply(self, settings: LogSettings) -> None:
        self.settings = settings
        verbose = settings.log_verbose_level
        self._filter.info, self._filter.warning, self._filter.error = (
            settings.log_info,
            settings.log_warning,
            settings.log_error,
        )
        if self._handler is not None:
            formatter = (
                _Iso8601Formatter(_FORMAT) if settings.log_format == "ISO8601" else logging.Formatter(_FORMAT)
            )
            self._handler.setFormatter(formatter)
        logging.getLogger().setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
        logging.getLogger("server").setLevel(logging.DEBUG if verbose >= 1 else logging.NOTSET)
        for name in _CHATTY:
            logging.getLogger(name).setLevel(logging.NOTSET if verbose >= 2 else logging.INFO)
        REQUEST_LOG.on = verbose >= 1


def skip_unused_record_fields() -> None:
    """The server's formats name only time, level, logger and message: let its records skip the
    caller's frame, thread and process lookups (the logging HOWTO's "Optimization"; ~20 % of each
    line, and a thousand models loading on demand log several lines a load). Server process only."""
    logging._srcfile = None  # the documented switch
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


#: The process's log settings (logging is per process, like Python's own).
LOG_CONTROL = LogControl()
