"""Structured logs, configured once at each entrypoint (STYLE habit 9).

Events are snake_case names followed by key=value fields, written with stdlib logging:

    log.info("cdrs_accepted campaign=%s accepted=%d duplicates=%d", campaign, n, d)

On a terminal they print as they are, prefixed by time, level and service. Elsewhere
(CI, containers, `cdrwatch up` children) each record is one JSON object on stderr:

    {"ts": "2026-11-02T10:00:00.123Z", "level": "info", "service": "ingest",
     "logger": "services.ingest.app", "event": "cdrs_accepted",
     "campaign": "c1", "accepted": "998", "duplicates": "2"}

Fields passed with ``extra={...}`` land in the JSON object as they are (typed values kept).
"""

from __future__ import annotations

import datetime as dt
import json as jsonlib
import logging
import re
import sys
from typing import Any

__all__ = ["JsonFormatter", "TextFormatter", "configure_logging", "split_event"]

# `key=value` pairs after the event name; a value may be double-quoted to hold spaces.
_FIELD = re.compile(r'(?P<key>[A-Za-z_][A-Za-z0-9_.]*)=(?P<value>"(?:[^"\\]|\\.)*"|\S*)')
_EVENT = re.compile(r"[a-z][a-z0-9_]*")

# Attributes every LogRecord has; anything else came in through `extra=`.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)

_HANDLER_NAME = "cdrwatch"

# Libraries that are chatty at INFO; they still show their warnings.
_QUIET_LOGGERS = ("aiokafka", "kafka", "faust", "mode", "uvicorn.access", "asyncio")


def split_event(message: str) -> tuple[str, dict[str, str]]:
    """``"cdrs_accepted campaign=c1 n=3"`` -> ``("cdrs_accepted", {"campaign": "c1", "n": "3"})``.

    A message that does not start with a snake_case event name followed by key=value
    fields is returned whole as the event with no fields (third-party log lines).
    """
    head, _, rest = message.partition(" ")
    if not _EVENT.fullmatch(head):
        return message, {}
    fields: dict[str, str] = {}
    position = 0
    rest = rest.strip()
    while position < len(rest):
        match = _FIELD.match(rest, position)
        if match is None:
            return message, {}
        value = match["value"]
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        fields[match["key"]] = value
        position = match.end()
        while position < len(rest) and rest[position] == " ":
            position += 1
    return head, fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ms), level, service, logger, event, fields."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        event, fields = split_event(record.getMessage())
        created = dt.datetime.fromtimestamp(record.created, tz=dt.UTC)
        payload: dict[str, Any] = {
            "ts": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "event": event,
        }
        for key, value in fields.items():
            payload.setdefault(key, value)
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                payload.setdefault(key, value)
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            payload["stack_info"] = self.formatStack(record.stack_info)
        return jsonlib.dumps(payload, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``10:00:00.123 INFO  ingest cdrs_accepted campaign=c1 accepted=998`` for terminals."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        created = dt.datetime.fromtimestamp(record.created, tz=dt.UTC).astimezone()
        line = (
            f"{created:%H:%M:%S}.{created.microsecond // 1000:03d} "
            f"{record.levelname:<7} {self._service} {record.getMessage()}"
        )
        extras = [
            f"{key}={value}"
            for key, value in vars(record).items()
            if key not in _STANDARD_ATTRS and not key.startswith("_")
        ]
        if extras:
            line += " " + " ".join(extras)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def configure_logging(service: str, json: bool | None = None, level: str | int = "INFO") -> None:
    """Send every log record to stderr, once, for the process running `service`.

    `json`: True for JSON lines, False for text, None to choose JSON unless stderr is a
    terminal. Calling it again replaces the handler it installed before (no duplicate
    lines); handlers installed by others (pytest's capture) are left alone.
    """
    use_json = (not sys.stderr.isatty()) if json is None else json
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if use_json else TextFormatter(service))
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    for existing in list(root.handlers):
        # Only our own handler is replaced: pytest's capture handlers stay in place.
        if existing.get_name() == _HANDLER_NAME:
            root.removeHandler(existing)
            existing.close()
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    quiet = logging.WARNING if root.level >= logging.INFO else logging.NOTSET
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(quiet)
    logging.captureWarnings(True)
