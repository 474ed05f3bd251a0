"""kamailio-acc: acc module syslog lines (`ACC: transaction answered: key=value;...`).

A call is its INVITE record and its BYE record, paired on `call_id` and `from_tag`
(docs/integrations/kamailio-acc.md):

- INVITE with a 2xx code: answered; originated_at = answered_at = its `timestamp` (the time
  of the 200 OK: acc logs no earlier instant); ended_at = the BYE's `timestamp`;
- INVITE with a code >= 300 (logged with `failed_transaction_flag`): not answered,
  originated_at = ended_at = its timestamp, `sip_code` the code;
- a BYE without its INVITE, or an INVITE whose BYE never came (end of input, or more than
  `group_window_rows` lines later), is rejected with its line.
`timestamp` is an epoch number in the mapping's `epoch_unit` (seconds by default).
"""

from __future__ import annotations

import re

from services.ingest.formats.base import (
    BadValue,
    CallFields,
    Mapping,
    Outcome,
    Rejected,
    epoch_instant,
    first,
    outcome_of,
)
from services.ingest.formats.lines import LineMapper, Row

FORMAT = "kamailio-acc"
_PAIR = re.compile(r"([A-Za-z_][\w.]*)=([^;]*)")


class KamailioAccMapper(LineMapper):
    def __init__(self, mapping: Mapping) -> None:
        super().__init__(mapping)
        self.open: dict[tuple[str, str], tuple[Row, int, int, int]] = {}
        self.count = 0

    def feed(self, line: str, line_no: int, offset: int) -> list[Outcome]:
        start = line.find("timestamp=")
        if start < 0:
            start = line.find("method=")
        if start < 0:
            return (
                []
                if not line.strip()
                else [Rejected("bad_row", "no acc key=value pairs on the line", line_no, offset)]
            )
        self.count += 1
        row: Row = dict(_PAIR.findall(line[start:]))
        method = str(row.get("method", "")).upper()
        key = (str(row.get("call_id", "")), str(row.get("from_tag", "")))
        out: list[Outcome] = []
        if method == "INVITE":
            code = _code(row)
            if code is not None and code >= 300:
                out.append(self._call(row, None, line_no, offset))
            else:
                self.open[key] = (row, line_no, offset, self.count)
        elif method == "BYE":
            opened = self.open.pop(key, None)
            if opened is None:
                out.append(
                    Rejected("unpaired", "BYE without its INVITE record", line_no, offset, key[0])
                )
            else:
                out.append(self._call(opened[0], row, opened[1], opened[2], rows=2))
        out.extend(self._expire())
        return out

    def _expire(self) -> list[Outcome]:
        horizon = self.count - self.mapping.group_window_rows
        stale = [k for k, (_, _, _, seen) in self.open.items() if seen <= horizon]
        return [self._no_bye(self.open.pop(k)) for k in stale]

    def _no_bye(self, opened: tuple[Row, int, int, int]) -> Outcome:
        row, line_no, offset, _ = opened
        return Rejected(
            "unpaired", "INVITE without a BYE record", line_no, offset, str(row.get("call_id"))
        )

    def flush(self) -> list[Outcome]:
        out = [self._no_bye(opened) for opened in self.open.values()]
        self.open.clear()
        return out

    def pending_position(self) -> tuple[int, int] | None:
        return min(((offset, line) for _, line, offset, _ in self.open.values()), default=None)

    def _call(
        self, invite: Row, bye: Row | None, line_no: int, offset: int, rows: int = 1
    ) -> Outcome:
        call_id = str(invite.get("call_id", ""))
        unit = self.mapping.epoch_unit
        try:
            started = epoch_instant(str(invite.get("timestamp", "")), unit, "timestamp")
            ended = (
                epoch_instant(str(bye.get("timestamp", "")), unit, "timestamp")
                if bye is not None
                else started
            )
        except BadValue as exc:
            return Rejected(exc.reason, str(exc), line_no, offset, call_id, rows)
        if started is None or ended is None:
            return Rejected("bad_timestamp", "timestamp 0", line_no, offset, call_id, rows)
        code = _code(invite)
        merged = {**(bye or {}), **invite}
        fields = CallFields(
            call_id=call_id,
            originated_at=started,
            ended_at=max(ended, started),
            callee_raw=first(invite, self.mapping.callee),
            source=merged,
            answered_at=started if bye is not None else None,
            sip_code=code,
            disposition=f"{code} {invite.get('reason', '')}".strip() if code else None,
        )
        return outcome_of(fields, self.mapping, line=line_no, offset=offset, rows=rows)


def _code(row: Row) -> int | None:
    text = str(row.get("code", "")).strip()
    return int(text) if text.isdigit() else None


def create(mapping: Mapping) -> KamailioAccMapper:
    return KamailioAccMapper(mapping)
