"""cdr-v1-ndjson: CDR v1 records, one JSON object per line, passed on as they are (the
ingest validates them like any `POST /v1/cdrs` record). A line that is not a JSON object
is rejected with its line number."""

from __future__ import annotations

import orjson

from services.ingest.formats.base import Mapped, Mapping, Outcome, Rejected
from services.ingest.formats.lines import LineMapper

FORMAT = "cdr-v1-ndjson"


class NdjsonMapper(LineMapper):
    def feed(self, line: str, line_no: int, offset: int) -> list[Outcome]:
        if not line.strip():
            return []
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            return [Rejected("bad_row", f"not valid JSON ({exc})", line_no, offset)]
        if not isinstance(value, dict):
            return [Rejected("bad_row", "not a JSON object", line_no, offset)]
        return [Mapped(value, line=line_no, offset=offset)]


def create(mapping: Mapping) -> NdjsonMapper:
    return NdjsonMapper(mapping)
