"""Reading and splitting a `POST /v1/cdrs` body into raw records. No framework imports.

Accepted media types: `application/json` (one object or an array of objects) and
`application/x-ndjson` (also `application/ndjson`: one object per line, blank lines
skipped). A JSON body that does not parse fails the whole request (400); an NDJSON line
that does not parse is an error of that record only. Nesting deeper than the parser's
limit (1024 levels) is such a parse error, with a message that says so, never a 500. The
body is read with a byte limit (Content-Length is checked first, then the stream as it
arrives), so an oversized body is never held in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson

JSON_TYPES = frozenset({"application/json"})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl"})
_BOM = b"\xef\xbb\xbf"
_DEPTH_MESSAGE = "nests objects or arrays deeper than 1024 levels"


class BodyError(Exception):
    """The request body as a whole cannot be taken; `status_code` says how to answer."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedBody(BodyError):
    status_code = 400


class PayloadTooLarge(BodyError):
    status_code = 413


class UnsupportedMediaType(BodyError):
    status_code = 415


@dataclass(frozen=True, slots=True)
class UnreadableRecord:
    """An NDJSON line that is not JSON: it becomes an error of its record, not of the body."""

    message: str


# A parsed JSON value (a dict when well formed; anything else is refused per record by
# schemas.cdr_v1.parse_cdr) or an UnreadableRecord.
RawItem = object


def media_type_of(content_type: str | None, content_encoding: str | None = None) -> str:
    """The body's media type, or UnsupportedMediaType."""
    if content_encoding and content_encoding.strip().lower() not in ("", "identity"):
        raise UnsupportedMediaType(
            f"Content-Encoding {content_encoding.strip()} is not supported; send the body "
            "uncompressed"
        )
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type in JSON_TYPES or media_type in NDJSON_TYPES:
        return media_type
    shown = media_type or "(none)"
    raise UnsupportedMediaType(
        f"Content-Type {shown} is not supported; use application/json (an object or an "
        "array of objects) or application/x-ndjson (one object per line)"
    )


async def read_body(
    chunks: AsyncIterator[bytes], content_length: str | None, max_bytes: int
) -> bytes:
    """The whole body, refusing (413) as soon as it is known to exceed `max_bytes`."""
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise MalformedBody("Content-Length is not a number") from None
        if declared > max_bytes:
            raise PayloadTooLarge(_too_many_bytes(max_bytes))
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        if len(buffer) > max_bytes:
            raise PayloadTooLarge(_too_many_bytes(max_bytes))
    return bytes(buffer)


def split_records(body: bytes, media_type: str, max_records: int) -> list[RawItem]:
    """The body's records, each a parsed JSON value or an `UnreadableRecord`.

    Raises MalformedBody (400) for a JSON body that does not parse or holds no records, and
    PayloadTooLarge (413) for more than `max_records` records.
    """
    if body.startswith(_BOM):
        body = body[len(_BOM) :]
    items = _split_ndjson(body, max_records) if media_type in NDJSON_TYPES else _split_json(body)
    if not items:
        raise MalformedBody("the body holds no records")
    if len(items) > max_records:
        raise PayloadTooLarge(_too_many_records(max_records))
    return items


def _split_json(body: bytes) -> list[RawItem]:
    if not body.strip():
        return []
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if _too_deep(exc):
            raise MalformedBody(f"body {_DEPTH_MESSAGE}") from None
        raise MalformedBody(
            f"body is not valid JSON ({exc}); for one record per line send "
            "Content-Type: application/x-ndjson"
        ) from None
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return [value]
    raise MalformedBody("body must be a JSON object or an array of objects")


def _split_ndjson(body: bytes, max_records: int) -> list[RawItem]:
    items: list[RawItem] = []
    for line_number, line in enumerate(body.split(b"\n"), start=1):
        line = line.strip()
        if not line:
            continue
        if len(items) == max_records:
            raise PayloadTooLarge(_too_many_records(max_records))
        try:
            items.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            if _too_deep(exc):
                items.append(UnreadableRecord(f"line {line_number} {_DEPTH_MESSAGE}"))
            else:
                items.append(UnreadableRecord(f"line {line_number} is not valid JSON ({exc})"))
    return items


def _too_deep(exc: orjson.JSONDecodeError) -> bool:
    text = str(exc).lower()
    return "depth" in text or "recursion" in text


def _too_many_bytes(max_bytes: int) -> str:
    return f"body larger than {max_bytes} bytes; split the batch"


def _too_many_records(max_records: int) -> str:
    return f"more than {max_records} records in one request; split the batch"
