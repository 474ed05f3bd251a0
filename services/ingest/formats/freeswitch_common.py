"""What mod_json_cdr and mod_xml_cdr documents share once parsed: `variables` (text) and
the `callflow` profiles (newest first), mapped to one call by one rule set
(docs/integrations/freeswitch-json.md):

- a B-leg (its caller profile has an `originator`) is an internal leg: skipped and counted
  (the A-leg's CDR holds the call) unless `skip_internal_legs = false`;
- instants: `*_uepoch` variables are µs epochs, `*_epoch` seconds, `*_stamp` local time in
  the mapping's zone; callflow `times.*` are µs epochs;
- answered: the earliest non-zero `times.answered_time` over **every** callflow profile
  (a transferred call has several; the newest may hold zeros), else `answer_uepoch`.
  When the sources disagree (the 2008 sample's `answer_epoch` equals the start while
  `answered_time`, `answer_stamp` and `billsec` say 3 s later) the callflow's channel
  timestamp wins: it is what `billsec` is computed from. `hangup_cause` never decides an
  answer (NORMAL_CLEARING is also the cause of calls refused before answer);
- originated: `start_uepoch`, else the earliest `created_time`; ended: `end_uepoch`, else
  the latest `hangup_time`; ringing: `progress_uepoch` when non-zero;
- agent bridge: the mapping's `agent_connected` variable (`bridge_uepoch` by default),
  kept within [answered, ended];
- the mapping's names may be `variables` names or `callflow.<caller profile field>`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.ingest.formats.base import (
    BadValue,
    CallFields,
    Mapping,
    Outcome,
    Rejected,
    Skipped,
    clamp_to_answer,
    epoch_instant,
    first,
    local_instant,
    outcome_of,
)

Profile = dict[str, Any]  # {"caller_profile": {...}, "times": {...}}


def map_leg(
    variables: dict[str, str], callflows: list[Profile], mapping: Mapping, line: int = 1
) -> Outcome:
    profile = callflows[0].get("caller_profile", {}) if callflows else {}
    if not isinstance(profile, dict):
        profile = {}
    source: dict[str, Any] = dict(variables)
    for name, value in profile.items():
        if isinstance(value, str):
            source[f"callflow.{name}"] = value
    call_id = first(source, mapping.call_id or ["uuid", "callflow.uuid"]) or ""
    if mapping.skip_internal_legs and any(
        isinstance(flow.get("caller_profile"), dict) and "originator" in flow["caller_profile"]
        for flow in callflows
    ):
        return Skipped("internal_leg", line, 0, call_id)
    zone = mapping.zone()
    try:
        times = [flow.get("times", {}) for flow in callflows if isinstance(flow.get("times"), dict)]
        start = _var_instant(variables, "start", zone) or _times(times, "created_time", min)
        end = _var_instant(variables, "end", zone) or _times(times, "hangup_time", max)
        answered = _times(times, "answered_time", min) or _var_instant(variables, "answer", zone)
        ringing = _var_instant(variables, "progress", zone, stamps=False)
        agent = None
        for name in mapping.agent_connected:
            agent = _named_instant(source, name, zone)
            if agent is not None:
                break
    except BadValue as exc:
        return Rejected(exc.reason, str(exc), line, 0, call_id)
    if start is None or end is None:
        return Rejected("missing_field", "no start or end time in the CDR", line, 0, call_id)
    if ringing is not None and not start <= ringing <= (answered or end):
        ringing = None
    if answered is not None and not start <= answered <= end:
        answered = min(max(answered, start), end)
    sip_code = first(variables, ["sip_term_status"])
    fields = CallFields(
        call_id=call_id,
        originated_at=start,
        ended_at=end,
        callee_raw=first(source, mapping.callee),
        source=source,
        answered_at=answered,
        ringing_at=ringing,
        agent_connected_at=clamp_to_answer(agent, answered, end),
        sip_code=int(sip_code) if sip_code and sip_code.isdigit() else None,
    )
    return outcome_of(fields, mapping, line=line, offset=0)


def _named_instant(source: dict[str, Any], name: str, zone: Any) -> datetime | None:
    text = str(source.get(name, "") or "").strip()
    if not text or text == "0":
        return None
    if name.endswith("uepoch") or name.endswith("_time"):
        return epoch_instant(text, "us", name)
    if name.endswith("epoch"):
        return epoch_instant(text, "s", name)
    return local_instant(text, zone, name)


def _var_instant(
    variables: dict[str, str], stem: str, zone: Any, *, stamps: bool = True
) -> datetime | None:
    for suffix in ("_uepoch", "_epoch", "_stamp") if stamps else ("_uepoch",):
        value = _named_instant(variables, stem + suffix, zone)
        if value is not None:
            return value
    return None


def _times(times: list[dict[str, Any]], name: str, pick: Any) -> datetime | None:
    values = []
    for entry in times:
        text = str(entry.get(name, "") or "").strip()
        if text and text != "0":
            value = epoch_instant(text, "us", f"callflow.times.{name}")
            if value is not None:
                values.append(value)
    return pick(values) if values else None
