"""freeswitch-cdr-csv: mod_cdr_csv's Master.csv (no header; `columns` in the mapping,
default the stock `example` template). One row is one leg; `start_stamp`,
`answer_stamp`, `end_stamp` are the switch's local time (the mapping's zone); an empty
`answer_stamp` means not answered (whatever `hangup_cause` says: NORMAL_CLEARING is also
the cause of unanswered calls). Columns holding `*_uepoch` / `*_epoch` values are read as
µs / s epochs (docs/integrations/freeswitch-cdr-csv.md)."""

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
from services.ingest.formats.lines import CsvMapper, Row

FORMAT = "freeswitch-cdr-csv"


class FreeswitchCsvMapper(CsvMapper):
    def __init__(self, mapping: Mapping) -> None:
        super().__init__(mapping)
        self.zone = mapping.zone()

    def _instant(self, row: Row, names: list[str]) -> datetime | None:
        for name in names:
            text = str(row.get(name, "")).strip()
            if not text:
                continue
            if name.endswith("uepoch"):
                return epoch_instant(text, "us", name)
            if name.endswith("epoch"):
                return epoch_instant(text, "s", name)
            return local_instant(text, self.zone, name)
        return None

    def map_row(self, row: Row, line_no: int, offset: int) -> list[Outcome]:
        call_id = first(row, self.mapping.call_id or ["uuid"]) or ""
        try:
            start = self._instant(row, ["start_uepoch", "start_stamp", "start_epoch"])
            end = self._instant(row, ["end_uepoch", "end_stamp", "end_epoch"])
            answered = self._instant(row, ["answer_uepoch", "answer_stamp", "answer_epoch"])
            agent = self._instant(row, self.mapping.agent_connected)
            ringing = self._instant(row, self.mapping.ringing)
        except BadValue as exc:
            return [Rejected(exc.reason, str(exc), line_no, offset, call_id)]
        if start is None or end is None:
            return [
                Rejected("missing_field", "start or end time missing", line_no, offset, call_id)
            ]
        fields = CallFields(
            call_id=call_id,
            originated_at=start,
            ended_at=end,
            callee_raw=first(row, self.mapping.callee),
            source=row,
            answered_at=answered,
            ringing_at=ringing if ringing is not None and start <= ringing else None,
            agent_connected_at=clamp_to_answer(agent, answered, end),
        )
        return [outcome_of(fields, self.mapping, line=line_no, offset=offset)]


def create(mapping: Mapping) -> FreeswitchCsvMapper:
    return FreeswitchCsvMapper(mapping)
