"""asterisk-cdr-csv: cdr_csv's Master.csv (no header; `columns` in the mapping).

One call may be several rows (parallel Dial, Local channels, transfers): rows are joined by
`linkedid` (by `uniqueid` when there is no linkedid column), or by the mapping's
`group_by` columns, and ordered by `sequence`. Rules (docs/integrations/asterisk-cdr-csv.md):

- originated_at = earliest `start`, ended_at = latest `end` (local time in the mapping's
  zone unless the text carries an offset);
- answered_at = earliest `answer` of an ANSWERED row, except a row with no `dstchannel`
  and `billsec` 0 (the PBX's own zero-length answer at hangup, not a callee);
- agent_connected_at = the mapping's `agent_connected` column when set, else the earliest
  `answer` of an ANSWERED row with a `dstchannel` (the bridge: cdr_csv has no bridge time);
- callee, campaign, AMD: the mapping's columns, first non-empty over the call's rows.
"""

from __future__ import annotations

from datetime import datetime

from services.ingest.formats.base import (
    BadValue,
    CallFields,
    Mapping,
    Outcome,
    Rejected,
    clamp_to_answer,
    epoch_instant,
    first,
    local_instant,
    outcome_of,
)
from services.ingest.formats.lines import CsvMapper, Joiner, Row, RowGroup

FORMAT = "asterisk-cdr-csv"


class AsteriskCdrMapper(CsvMapper):
    def __init__(self, mapping: Mapping) -> None:
        super().__init__(mapping)
        self.joiner = Joiner(mapping.group_window_rows)
        self.zone = mapping.zone()

    def map_row(self, row: Row, line_no: int, offset: int) -> list[Outcome]:
        if self.mapping.group_by:
            key = "\x1f".join(str(row.get(name, "")) for name in self._group_by(row))
        else:
            key = str(first(row, self.mapping.call_id or ["linkedid", "uniqueid"]) or "")
        return [self._call(group) for group in self.joiner.add(key, row, line_no, offset)]

    def _group_by(self, row: Row) -> list[str]:
        names = self.mapping.call_id or ["linkedid", "uniqueid"]
        for name in names:
            if row.get(name):
                return [*self.mapping.group_by, name]
        return [*self.mapping.group_by, names[-1]]

    def flush(self) -> list[Outcome]:
        return [self._call(group) for group in self.joiner.drain()]

    def pending_position(self) -> tuple[int, int] | None:
        return self.joiner.pending_position()

    def _instant(self, text: str, name: str) -> datetime:
        if text.isdigit():
            value = epoch_instant(text, self.mapping.epoch_unit, name)
            if value is None:
                raise BadValue(f"{name}: epoch 0")
            return value
        return local_instant(text, self.zone, name)

    def _call(self, group: RowGroup) -> Outcome:
        rows = group.rows
        if len(rows) > 1:
            rows = sorted(rows, key=lambda item: _sequence(item[0]))
        line, offset, count = group.line, group.offset, len(rows)
        first_row = rows[0][0]
        call_id = first(first_row, self.mapping.call_id or ["linkedid", "uniqueid"]) or ""
        try:
            starts, ends = [], []
            answered: datetime | None = None
            bridged: datetime | None = None
            for row, _, _ in rows:
                starts.append(self._instant(str(row.get("start", "")), "start"))
                ends.append(self._instant(str(row.get("end", "")), "end"))
                answer_text = str(row.get("answer", "")).strip()
                if str(row.get("disposition", "")).upper() != "ANSWERED" or not answer_text:
                    continue
                answer = self._instant(answer_text, "answer")
                has_peer = bool(str(row.get("dstchannel", "")).strip())
                if not has_peer and str(row.get("billsec", "")).strip() in ("0", ""):
                    continue
                answered = answer if answered is None else min(answered, answer)
                if has_peer:
                    bridged = answer if bridged is None else min(bridged, answer)
            merged = first_row if len(rows) == 1 else _merge(row for row, _, _ in rows)
            agent_text = first(merged, self.mapping.agent_connected)
            if agent_text is not None:
                bridged = self._instant(agent_text, "agent_connected")
        except BadValue as exc:
            return Rejected(exc.reason, str(exc), line, offset, call_id, count)
        ended = max(ends)
        disposition = "ANSWERED" if answered is not None else first(merged, ["disposition"])
        fields = CallFields(
            call_id=call_id,
            originated_at=min(starts),
            ended_at=ended,
            callee_raw=first(first_row, self.mapping.callee) or first(merged, self.mapping.callee),
            source=merged,
            answered_at=answered,
            agent_connected_at=clamp_to_answer(bridged, answered, ended),
            disposition=disposition,
        )
        return outcome_of(fields, self.mapping, line=line, offset=offset, rows=count)


def _sequence(row: Row) -> int:
    text = str(row.get("sequence", "")).strip()
    return int(text) if text.isdigit() else 0


def _merge(rows: object) -> Row:
    """The first non-empty value of every column over the rows."""
    merged: Row = {}
    for row in rows:  # type: ignore[attr-defined]
        for name, value in row.items():
            if value not in ("", None) and name not in merged:
                merged[name] = value
    return merged


def create(mapping: Mapping) -> AsteriskCdrMapper:
    return AsteriskCdrMapper(mapping)
