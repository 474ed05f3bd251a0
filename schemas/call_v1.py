"""Call v1 (SPEC "Classification"; regulation IT-SC-1, Garante 2014: every silent call is
traced): the per-call facts the detector publishes on `cdrwatch.calls.v1` for the calls
that matter — silent, abandoned, or breaking a per-call rule (hours, late release, long
silent wait, lockout, ...) — and that `GET /v1/calls` serves.

One message is a batch of one campaign's calls (`CallBatchV1`, keyed by campaign like the
CDR topic), because the cost of a topic is per message. Facts are merged per (tenant,
campaign, call id): the main stage sends a call's times, outcome and per-call rule hits;
the lockout stage later adds lockout and frequency-cap hits of the same call with only
what it knows (`originated_at`, the rule ids; `outcome` null). A consumer keeps the known
value of each field and the union of the rule hits, so any order and any repetition of
the messages (replays, at-least-once delivery) gives the same row.

The callee is its keyed pseudonym (`callee_key`, from ingest); the raw number never
reaches this topic.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.cdr_v1 import DialMode, Id, Instant

# The core's outcome names (services.detector.core.model.CALL_OUTCOMES), most specific
# first: silent (no agent ever), abandoned (agent too late), answered (by a person, agent in
# time), amd_machine, unanswered.
CallOutcomeName = Literal["silent", "abandoned", "answered", "amd_machine", "unanswered"]
RuleId = Annotated[str, Field(min_length=1, max_length=120)]
MAX_CALLS_PER_MESSAGE = 500


class CallV1(BaseModel):
    """What is known of one call: its instants, outcome, dial mode, pseudonymised callee
    and the ids of the per-call rules it broke. Fields other than `call_id`,
    `originated_at` and `rule_hits` are null when the message does not know them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    call_id: Id
    originated_at: Instant
    answered_at: Instant | None = None
    agent_connected_at: Instant | None = None
    ended_at: Instant | None = None
    outcome: CallOutcomeName | None = None
    dial_mode: DialMode | None = None
    callee_key: Annotated[str, Field(min_length=8, max_length=128)] | None = None
    rule_hits: Annotated[list[RuleId], Field(max_length=64)] = Field(default_factory=list)


class CallBatchV1(BaseModel):
    """One message of `cdrwatch.calls.v1`: calls of one (tenant, campaign)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    campaign_id: Id
    tenant_id: Id
    calls: Annotated[list[CallV1], Field(min_length=1, max_length=MAX_CALLS_PER_MESSAGE)]
