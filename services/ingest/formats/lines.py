"""Line-oriented mappers: the feed/flush interface, CSV rows, and joining rows of one call.

A line mapper is fed one decoded line at a time with its line number and byte offset, and
returns the calls completed so far. Rows of one call (Asterisk CDR legs, CEL events) are
joined by a key; a call is complete when its closing row came (CEL `LINKEDID_END`), when
no row of it came for `group_window_rows` rows, or at `flush()` (end of input, or an idle
`--follow`). `pending_position()` is the byte offset and line of the oldest row not yet in an
outcome: a checkpoint never goes past it.
"""

from __future__ import annotations

import csv
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from services.ingest.formats.base import Mapping, Outcome, Rejected

Row = dict[str, Any]


class LineMapper:
    """Base of every line-oriented mapper."""

    document = False

    def __init__(self, mapping: Mapping) -> None:
        self.mapping = mapping

    def feed(self, line: str, line_no: int, offset: int) -> list[Outcome]:
        raise NotImplementedError

    def flush(self) -> list[Outcome]:
        return []

    def pending_position(self) -> tuple[int, int] | None:
        """(byte offset, line) of the oldest row not yet in an outcome, or None."""
        return None

    def start_file(self, header_line: str | None = None) -> None:
        """A new file begins (a rotated or next file): formats with a header row read the
        new file's own header (`header_line`, when resuming past it)."""
        del header_line


@dataclass
class RowGroup:
    rows: list[tuple[Row, int, int]] = field(default_factory=list)
    last_seen: int = 0

    @property
    def line(self) -> int:
        return min(line for _, line, _ in self.rows)

    @property
    def offset(self) -> int:
        return min(offset for _, _, offset in self.rows)


class CsvMapper(LineMapper):
    """CSV rows to dicts by the mapping's `columns` (or the file's header row), then
    `map_row`. A row with the wrong number of columns is rejected with its line."""

    def __init__(self, mapping: Mapping) -> None:
        super().__init__(mapping)
        self.columns: list[str] | None = None if mapping.header else mapping.columns
        if self.columns is None and not mapping.header:
            raise ValueError(f"mapping for {mapping.format} needs `columns` or `header = true`")

    def feed(self, line: str, line_no: int, offset: int) -> list[Outcome]:
        if not line.strip():
            return []
        try:
            row = next(csv.reader([line]))
        except (csv.Error, StopIteration) as exc:
            return [Rejected("bad_row", f"not a CSV row ({exc})", line_no, offset)]
        if self.columns is None:
            self.columns = [name.strip() for name in row]
            return []
        if len(row) != len(self.columns):
            return [
                Rejected(
                    "bad_row",
                    f"{len(row)} columns, the mapping expects {len(self.columns)}",
                    line_no,
                    offset,
                )
            ]
        return self.map_row(dict(zip(self.columns, row, strict=True)), line_no, offset)

    def map_row(self, row: Row, line_no: int, offset: int) -> list[Outcome]:
        raise NotImplementedError

    def start_file(self, header_line: str | None = None) -> None:
        if not self.mapping.header:
            return
        self.columns = None
        if header_line is not None:
            self.feed(header_line, 0, 0)


class Joiner:
    """Rows grouped by key; complete groups come out in the order they were last seen."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.groups: OrderedDict[str, RowGroup] = OrderedDict()
        self.count = 0

    def add(self, key: str, row: Row, line_no: int, offset: int) -> list[RowGroup]:
        self.count += 1
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = RowGroup()
        else:
            self.groups.move_to_end(key)
        group.rows.append((row, line_no, offset))
        group.last_seen = self.count
        done: list[RowGroup] = []
        horizon = self.count - self.window
        while self.groups:
            oldest_key = next(iter(self.groups))
            if self.groups[oldest_key].last_seen > horizon:
                break
            done.append(self.groups.pop(oldest_key))
        return done

    def close(self, key: str) -> RowGroup | None:
        return self.groups.pop(key, None)

    def drain(self) -> list[RowGroup]:
        done = list(self.groups.values())
        self.groups.clear()
        return done

    def pending_position(self) -> tuple[int, int] | None:
        if not self.groups:
            return None
        return min((group.offset, group.line) for group in self.groups.values())
