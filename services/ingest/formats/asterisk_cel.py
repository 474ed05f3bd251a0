"""asterisk-cel: Channel Event Logging rows as CSV with a header (cel_custom, or a
`cel` table exported with its column names). Events are joined by `linkedid`; a call is
complete at `LINKEDID_END` (or when its events stop for `group_window_rows` rows, or at
the end of input). Rules (docs/integrations/asterisk-cel.md):

- originated_at = the first `CHAN_START`; ended_at = `LINKEDID_END` (else the last event);
- the callee channel: `cel_mode = "dial"` (a phone or agent dials out) the first channel
  other than the call's own and not a `Local/` channel; `"originate"` (the dialer calls the
  callee first) the call's own first channel;
- answered_at = the callee channel's first `ANSWER`; agent_connected_at = its first
  `BRIDGE_ENTER` (kept within [answered, ended]);
- callee number: the mapping's `callee` columns of the first channel's `CHAN_START`
  (`exten`, the number dialled) in dial mode, of the callee channel in originate mode;
- hangup cause: `hangupcause` in the `extra` JSON of the callee channel's `HANGUP`.
"""

from __future__ import annotations

from datetime import datetime

import orjson

from services.ingest.formats.base import (
    BadValue,
    CallFields,
    Mapping,
    Outcome,
    Rejected,
    clamp_to_answer,
    first,
    local_instant,
    outcome_of,
)
from services.ingest.formats.lines import CsvMapper, Joiner, Row, RowGroup

FORMAT = "asterisk-cel"


class CelMapper(CsvMapper):
    def __init__(self, mapping: Mapping) -> None:
        super().__init__(mapping)
        self.joiner = Joiner(mapping.group_window_rows)
        self.zone = mapping.zone()

    def map_row(self, row: Row, line_no: int, offset: int) -> list[Outcome]:
        key = str(row.get("linkedid") or row.get("uniqueid") or "")
        done = self.joiner.add(key, row, line_no, offset)
        if str(row.get("eventtype", "")).upper() == "LINKEDID_END":
            closed = self.joiner.close(key)
            if closed is not None:
                done.append(closed)
        return [self._call(group) for group in done]

    def flush(self) -> list[Outcome]:
        return [self._call(group) for group in self.joiner.drain()]

    def pending_position(self) -> tuple[int, int] | None:
        return self.joiner.pending_position()

    def _call(self, group: RowGroup) -> Outcome:
        line, offset, count = group.line, group.offset, len(group.rows)
        events = [row for row, _, _ in group.rows]
        call_id = str(events[0].get("linkedid") or events[0].get("uniqueid") or "")
        try:
            timed = [
                (local_instant(str(e.get("eventtime", "")), self.zone, "eventtime"), e)
                for e in events
            ]
        except BadValue as exc:
            return Rejected(exc.reason, str(exc), line, offset, call_id, count)
        timed.sort(key=lambda item: item[0])
        channels: list[str] = []
        starts: dict[str, Row] = {}
        for _, event in timed:
            if str(event.get("eventtype")).upper() == "CHAN_START":
                uid = str(event.get("uniqueid", ""))
                if uid not in starts:
                    starts[uid] = event
                    channels.append(uid)
        own = call_id if call_id in starts else (channels[0] if channels else call_id)
        if self.mapping.cel_mode == "originate":
            callee_channel: str | None = own
            number_event = starts.get(own, events[0])
        else:
            callee_channel = next(
                (
                    uid
                    for uid in channels
                    if uid != own and not str(starts[uid].get("channame", "")).startswith("Local/")
                ),
                None,
            )
            number_event = starts.get(own, events[0])
        answered = bridged = None
        ended: datetime | None = None
        cause: str | None = None
        for when, event in timed:
            kind = str(event.get("eventtype", "")).upper()
            on_callee = callee_channel is not None and event.get("uniqueid") == callee_channel
            if kind == "ANSWER" and on_callee and answered is None:
                answered = when
            elif kind == "BRIDGE_ENTER" and on_callee and bridged is None:
                bridged = when
            elif kind == "HANGUP" and on_callee and cause is None:
                cause = _hangup_cause(event.get("extra"))
            elif kind == "LINKEDID_END":
                ended = when
        originated = timed[0][0]
        ended = ended or timed[-1][0]
        merged: Row = {}
        for event in events:
            for name, value in event.items():
                if value not in ("", None) and name not in merged:
                    merged[name] = value
        fields = CallFields(
            call_id=call_id,
            originated_at=originated,
            ended_at=ended,
            callee_raw=first(number_event, self.mapping.callee),
            source=merged,
            answered_at=answered,
            agent_connected_at=clamp_to_answer(bridged, answered, ended),
            hangup_cause=cause,
            disposition="ANSWERED" if answered is not None else "NO ANSWER",
        )
        return outcome_of(fields, self.mapping, line=line, offset=offset, rows=count)


def _hangup_cause(extra: object) -> str | None:
    if not extra:
        return None
    try:
        data = orjson.loads(str(extra))
    except orjson.JSONDecodeError:
        return None
    if isinstance(data, dict) and data.get("hangupcause") not in (None, ""):
        return str(data["hangupcause"])
    return None


def create(mapping: Mapping) -> CelMapper:
    return CelMapper(mapping)
