"""vicidial-csv: `vicidial_log` joined with `vicidial_carrier_log`, `vicidial_amd_log` and
`vicidial_campaigns` as exported to CSV with a header row by the query in
docs/integrations/vicidial-csv.md. One row is one outbound call.

- `start_epoch` / `end_epoch` are epoch **seconds** (read as seconds, never as ms);
  VICIdial writes the `vicidial_log` row when the call is answered (or given up), so
  originated_at = start − `dial_time` (carrier log seconds of ringing) when exported;
- the final `status` gives the outcome through `status_outcomes`: `no_answer` (NA, B, DC,
  …: not answered), `drop` (DROP, PDROP, XDROP: answered, no agent ever — abandoned and
  silent), `machine` (AA, AM, AL, AFAX: answered, AMD machine), anything else `human`
  (answered and handed to an agent: agent_connected_at = answered + `queue_seconds` when
  exported, else the answer itself);
- `amd_status` (AMDSTATUS) refines the AMD result through `amd_values`;
- callee: `phone_code` + `phone_number` (E.164 when the number has no international prefix).
"""

from __future__ import annotations

from datetime import timedelta

from services.ingest.formats.base import (
    BadValue,
    CallFields,
    Mapping,
    Outcome,
    Rejected,
    epoch_instant,
    first,
    local_instant,
    outcome_of,
)
from services.ingest.formats.lines import CsvMapper, Row

FORMAT = "vicidial-csv"


class VicidialMapper(CsvMapper):
    def __init__(self, mapping: Mapping) -> None:
        super().__init__(mapping)
        self.zone = mapping.zone()

    def map_row(self, row: Row, line_no: int, offset: int) -> list[Outcome]:
        call_id = first(row, self.mapping.call_id or ["uniqueid"]) or ""
        try:
            start_text = str(row.get("start_epoch", "")).strip()
            if start_text and start_text != "0":
                start = epoch_instant(start_text, self.mapping.epoch_unit, "start_epoch")
            else:
                start = local_instant(str(row.get("call_date", "")), self.zone, "call_date")
            end_text = str(row.get("end_epoch", "")).strip()
            end = (
                epoch_instant(end_text, self.mapping.epoch_unit, "end_epoch")
                if end_text and end_text != "0"
                else None
            )
        except BadValue as exc:
            return [Rejected(exc.reason, str(exc), line_no, offset, call_id)]
        if start is None:
            return [Rejected("missing_field", "no start time", line_no, offset, call_id)]
        if end is None:
            end = start + timedelta(seconds=_seconds(row, "length_in_sec"))
        dial = _seconds(row, "dial_time")
        originated = start - timedelta(seconds=dial)
        status = str(row.get("status", "")).strip().upper()
        outcome = self.mapping.status_outcomes.get(status, "human")
        answered = agent = None
        amd = None
        if outcome != "no_answer":
            answered = start
        if outcome == "human":
            agent = min(start + timedelta(seconds=_seconds(row, "queue_seconds")), end)
        elif outcome == "machine":
            amd = "machine"
        number = str(row.get("phone_number", "")).strip()
        code = str(row.get("phone_code", "")).strip()
        if number and code.isdigit() and not number.startswith(("+", "00")):
            number = f"+{code}{number}"
        fields = CallFields(
            call_id=call_id,
            originated_at=originated,
            ended_at=max(end, start),
            callee_raw=number or first(row, self.mapping.callee),
            source=row,
            answered_at=answered,
            agent_connected_at=agent,
            amd_result=amd,  # type: ignore[arg-type]
            disposition=status or None,
        )
        if amd is None and answered is not None:
            raw = first(row, self.mapping.amd)
            if raw:
                fields.amd_result = self.mapping.amd_values.get(raw.upper())
        return [outcome_of(fields, self.mapping, line=line_no, offset=offset)]


def _seconds(row: Row, name: str) -> int:
    text = str(row.get(name, "")).strip()
    try:
        return max(0, int(float(text))) if text else 0
    except ValueError:
        return 0


def create(mapping: Mapping) -> VicidialMapper:
    return VicidialMapper(mapping)
