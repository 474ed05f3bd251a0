"""What each CDR v1 field means: type, unit, the rules it drives, an example.

One home for the field reference: the OpenAPI of `POST /v1/cdrs` (api and ingest) takes
its property descriptions and examples from `documented_cdr_schema()`, and
docs/cdr-v1.md is generated from it (`python -m schemas.cdr_v1_fields --write`; a test
fails when the committed file differs). A test also fails when a field of `CdrV1` has no
entry here, or an entry names no field.

Rule ids are those of the shipped profiles (services/detector/profiles/*.toml); SPEC
"Classification" says how the instants make a call answered, silent or abandoned.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.cdr_v1 import CdrV1

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "cdr-v1.md"

_RATES = "the silent and abandoned rates (it-/uk-/us- rate rules)"
_CLASSIFY = "classification: answered, answered by a person, silent, abandoned"


@dataclass(frozen=True, slots=True)
class FieldDoc:
    """`kind`: the JSON type as a person reads it, with its unit; `rules`: what it drives."""

    kind: str
    meaning: str
    rules: str
    example: Any


_INSTANT = "instant: RFC 3339 with offset, or integer epoch milliseconds (UTC)"

CDR_FIELDS: dict[str, FieldDoc] = {
    "call_id": FieldDoc(
        "string, id (1..128 printable characters, no `/`)",
        "Unique id of the attempt within the tenant; the dedup key (a repeated id is "
        "accepted and counted once).",
        "dedup; evidence call ids of every alert; `GET /v1/calls/{call_id}`",
        "c-20260302-000123",
    ),
    "campaign_id": FieldDoc(
        "string, id",
        "The campaign: every rate is per (tenant, campaign).",
        "scope of every rule (IT-SC-3: 'within each single campaign')",
        "spring-offers",
    ),
    "tenant_id": FieldDoc(
        "string, id, optional",
        "Tenant of the record; a tenant-bound token may only name its own, a token bound "
        "to no tenant writes the default tenant when absent.",
        "scope of every rule; lockouts are per (tenant, callee)",
        "acme",
    ),
    "call_center_id": FieldDoc(
        "string, id, optional", "Call centre that placed the call.", "none (kept)", "milano-1"
    ),
    "dialer_id": FieldDoc(
        "string, id, optional", "Dialer that placed the call.", "none (kept)", "vicidial-3"
    ),
    "dial_mode": FieldDoc(
        "enum: predictive (default), progressive, preview, manual, agentless",
        "How the dialer paced the call; progressive, preview and manual count as 'agent "
        "guaranteed'.",
        "lockout exemptions (uk-abandoned-lockout, uk-amd-lockout); it-silent-next-call "
        "(the first call after an IT lockout needs an agent guaranteed)",
        "predictive",
    ),
    "callee_number": FieldDoc(
        "string, 3..40 characters: E.164 (+39...), or a national form with callee_country",
        "The called number. Pseudonymised at ingest (keyed HMAC, `callee_key`); the raw "
        "number never leaves ingest.",
        "country and zones for calling hours; per-callee lockouts (it-silent-lockout, "
        "uk-abandoned-lockout, fr-refusal-lockout) and frequency caps (fr-frequency)",
        "+393471234567",
    ),
    "callee_country": FieldDoc(
        "string, ISO 3166-1 alpha-2 (upper case), optional",
        "Country of a national-form number; overrides the one derived from the number.",
        "calling hours (*-calling-hours)",
        "IT",
    ),
    "callee_tz": FieldDoc(
        "string, IANA zone, optional",
        "The callee's zone; overrides the zones derived from the number.",
        "calling hours (*-calling-hours), judged in the callee's local time",
        "Europe/Rome",
    ),
    "callee_region": FieldDoc(
        "string, ISO 3166-2 (`US-FL`), optional",
        "Callee's state or region; US state hours replace the federal window.",
        "us-calling-hours (state hours, services/detector/profiles/us_states.toml)",
        "US-FL",
    ),
    "cli_number": FieldDoc(
        "string, up to 500 characters, optional",
        "Caller id presented to the callee.",
        "none yet (kept)",
        "+390212345678",
    ),
    "cli_presentation": FieldDoc(
        "enum: allowed, withheld; optional",
        "Whether the caller id was shown.",
        "none yet",
        "allowed",
    ),
    "originated_at": FieldDoc(
        _INSTANT + "; required",
        "The dialer started the attempt. The call belongs to the minute bucket, calendar "
        "day and window of this instant.",
        "every window; calling hours (*-calling-hours); lockout and frequency-cap timing",
        "2026-03-02T10:15:00+01:00",
    ),
    "ringing_at": FieldDoc(
        _INSTANT + "; optional, ≥ originated_at",
        "Far end ringing.",
        "short ring: ended_at − ringing_at < 15 s (uk-short-ring, us-short-ring)",
        "2026-03-02T10:15:01+01:00",
    ),
    "answered_at": FieldDoc(
        _INSTANT + "; optional, ≥ ringing_at",
        "Far end answered; absent: not answered.",
        f"{_CLASSIFY}; {_RATES}; it-silent-release (3 s), it-long-silent-wait (3 s)",
        "2026-03-02T10:15:09+01:00",
    ),
    "greeting_ended_at": FieldDoc(
        _INSTANT + "; optional, in [answered_at, ended_at]",
        "End of the callee's first utterance; the reference of the 2-second connect "
        "limit when present (else answered_at).",
        "abandoned (connect limit 2 s); uk-abandoned-message, us-abandoned-message",
        "2026-03-02T10:15:10+01:00",
    ),
    "agent_connected_at": FieldDoc(
        _INSTANT + "; optional, in [answered_at, ended_at]",
        "A live agent was bridged to the callee; absent: nobody ever spoke (silent).",
        f"{_CLASSIFY} (silent: absent; abandoned: > 2 s after the reference); "
        "it-long-silent-wait (> 3 s after answered_at)",
        "2026-03-02T10:15:10.500+01:00",
    ),
    "message_started_at": FieldDoc(
        _INSTANT + "; optional, in [answered_at, ended_at]",
        "A recorded message (information, safe harbour, ...) started.",
        "uk-abandoned-message, us-abandoned-message (message within 2 s)",
        "2026-03-02T10:15:11+01:00",
    ),
    "ended_at": FieldDoc(
        _INSTANT + "; required, ≥ answered_at",
        "End of the call.",
        "it-silent-release (silent call released within 3 s of the answer); short ring",
        "2026-03-02T10:17:00+01:00",
    ),
    "amd_result": FieldDoc(
        "enum: human, machine, notsure, hangup, none (default: AMD not run)",
        "Answering-machine detection; only `machine` makes an answered call not a person's.",
        f"answered by a person; {_RATES}; uk AMD false-positive estimate; uk-amd-lockout",
        "human",
    ),
    "message_type": FieldDoc(
        "enum: comfort_noise, info, safe_harbor, opt_out, prerecorded; optional",
        "What the system played to the callee.",
        "it-comfort-noise (judged only when reported); uk-/us-abandoned-message",
        "comfort_noise",
    ),
    "hangup_side": FieldDoc(
        "enum: callee, system, agent; optional (absent on an unanswered call: system)",
        "Who released the call.",
        "short ring (released by the system): uk-short-ring, us-short-ring",
        "callee",
    ),
    "hangup_cause": FieldDoc(
        "string, up to 500 characters, optional",
        "Release cause as the dialer reports it (e.g. Q.850 name).",
        "none (kept)",
        "NORMAL_CLEARING",
    ),
    "sip_code": FieldDoc(
        "integer, 100..699, optional", "Final SIP response code.", "none (kept)", 200
    ),
    "disposition": FieldDoc(
        "string, up to 500 characters, optional",
        "Dialer status (VICIdial DROP, SALE, ...).",
        "none (kept)",
        "SALE",
    ),
    "agent_id": FieldDoc("string, id, optional", "The agent.", "none (kept)", "agent-17"),
    "refusal": FieldDoc(
        "boolean, optional",
        "The callee explicitly refused further calls.",
        "fr-refusal-lockout (60 days)",
        False,
    ),
    "extra": FieldDoc(
        "object, at most 3 levels deep and 4096 bytes of JSON, optional",
        "Non-personal fields the operator allowed (CDRWATCH_EXTRA_FIELDS_ALLOWED); "
        "phone-like values are pseudonymised. Other unknown fields are dropped.",
        "none (ignored by rules)",
        {"list_id": "L-2026-03"},
    ),
}


def documented_cdr_schema() -> dict[str, Any]:
    """CdrV1's JSON Schema (validation mode) with each property's description (meaning,
    type and unit, rules) and example from `CDR_FIELDS`."""
    schema = CdrV1.model_json_schema(mode="validation")
    for name, prop in schema["properties"].items():
        doc = CDR_FIELDS[name]
        prop["description"] = f"{doc.meaning} Type: {doc.kind}. Rules: {doc.rules}."
        prop["examples"] = [doc.example]
        prop["x-drives-rules"] = doc.rules
    schema["description"] = (
        "A call detail record as a dialer sends it (CDR v1). Field reference: docs/cdr-v1.md."
    )
    return schema


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown() -> str:
    """docs/cdr-v1.md."""
    required = set(CdrV1.model_json_schema(mode="validation").get("required", []))
    lines = [
        "# CDR v1 field reference",
        "",
        "<!-- Generated by `python -m schemas.cdr_v1_fields --write` from "
        "schemas/cdr_v1_fields.py; do not edit by hand. -->",
        "",
        "What a dialer sends to `POST /v1/cdrs` (a JSON object, a JSON array of them, or "
        "NDJSON). The model is `schemas/cdr_v1.py` (`CdrV1`), its JSON Schema "
        "`schemas/json/cdr_v1.schema.json`; the same descriptions are in the OpenAPI "
        "schema at `/docs`. Unknown fields are dropped unless allowed into `extra`. "
        "Instants are RFC 3339 with an offset or integer epoch milliseconds, on or after "
        "2000-01-01 and at most 1 h in the future; an epoch in seconds is refused. Order: "
        "originated_at ≤ ringing_at ≤ answered_at ≤ ended_at; greeting_ended_at, "
        "agent_connected_at and message_started_at need answered_at and lie in "
        "[answered_at, ended_at].",
        "",
        "| field | required | type and unit | meaning | rules it drives | example |",
        "|---|---|---|---|---|---|",
    ]
    for name in CdrV1.model_fields:
        doc = CDR_FIELDS[name]
        example = doc.example if isinstance(doc.example, str) else repr(doc.example)
        if isinstance(doc.example, bool):
            example = "true" if doc.example else "false"
        if isinstance(doc.example, dict):
            example = json.dumps(doc.example)
        lines.append(
            f"| `{name}` | {'yes' if name in required else 'no'} | {_cell(doc.kind)} | "
            f"{_cell(doc.meaning)} | {_cell(doc.rules)} | `{_cell(example)}` |"
        )
    lines += [
        "",
        "Classification (SPEC): answered by a person = `answered_at` set and `amd_result` ≠ "
        "`machine`; silent = answered by a person and no `agent_connected_at`; abandoned = "
        "answered by a person and the agent absent or connected more than 2 s after "
        "`greeting_ended_at` (else `answered_at`). Rates: silent ÷ answered by a person (it), "
        "abandoned ÷ answered by a person (uk, with the AMD estimate; us).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write or check docs/cdr-v1.md.")
    parser.add_argument("--write", action="store_true", help="write docs/cdr-v1.md")
    args = parser.parse_args(argv)
    text = render_markdown()
    if args.write:
        DOC_PATH.write_text(text, encoding="utf-8")
        return 0
    if not DOC_PATH.exists() or DOC_PATH.read_text(encoding="utf-8") != text:
        sys.stderr.write(f"{DOC_PATH} is stale: run python -m schemas.cdr_v1_fields --write\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
