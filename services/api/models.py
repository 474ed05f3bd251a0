"""Request and response bodies of the api that are not wire models of `schemas/`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.alert_v1 import AlertV1, Severity
from schemas.call_v1 import CallOutcomeName
from schemas.cdr_v1 import Instant
from schemas.detector_v1 import CampaignSettingsV1
from schemas.stats_v1 import StatsV1

CampaignStatus = Literal["ok", "warning", "violation"]
FeedState = Literal["live", "stale", "none"]
CampaignId = Annotated[str, Field(min_length=1, max_length=200)]
TenantId = Annotated[str, Field(min_length=1, max_length=200)]


class CampaignConfig(CampaignSettingsV1):
    """A campaign's configuration as PUT stores it and `cdrwatch.campaigns.v1` carries it
    (the wire model `CampaignSettingsV1`, with the time of the change always set).

    `profile` None means the detector's default profile; `overrides` are that profile's
    parameters replaced for this campaign.
    """

    updated_at: Instant


class CampaignUpdate(BaseModel):
    """Body of `PUT /v1/campaigns/{id}`; a key left out keeps the stored value."""

    model_config = ConfigDict(extra="forbid")

    profile: Annotated[str, Field(min_length=1, max_length=60)] | None = None
    overrides: dict[str, Any] | None = None
    amd_false_positive_ratio: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    tenant_id: TenantId | None = None


class Campaign(BaseModel):
    """A campaign as `GET /v1/campaigns` lists it.

    `profile` is the configured profile, else the one the detector reported; `status` comes
    from the campaign's firing alerts; `windows` holds the latest figures of each live
    window the detector publishes (`cumulative`, `15m`, `1h`, `24h`, ...).

    `last_cdr_received_at` is when the api last stored figures the detector derived from
    the campaign's CDRs as they arrived (wall clock; a restart's replay leaves it; the
    newest call's own time is `windows.cumulative.to`);
    `feed` is `stale` when that is longer ago than `CDRWATCH_STALE_FEED_MINUTES` (a dialer
    that stopped sending), `none` before any CDR.
    """

    campaign_id: str
    tenant_id: str
    profile: str | None
    overrides: dict[str, Any]
    amd_false_positive_ratio: float
    configured_at: Instant | None
    first_seen_at: Instant
    status: CampaignStatus
    firing_alerts: int
    windows: dict[str, StatsV1]
    last_cdr_received_at: Instant | None = None
    feed: FeedState = "none"
    # Records of the campaign dead-lettered after ingest answered (or, on the raw topic,
    # after the broker took them): reason -> count, every stage summed.
    rejected_after_acceptance: dict[str, int] = Field(default_factory=dict)


class CampaignRejection(BaseModel):
    """Records dead-lettered (cdrwatch.cdrs.dlq.v1) for one stage and reason: how many,
    when the api first and last read one, and the first few call ids."""

    stage: str
    reason: str
    count: int
    first_seen_at: Instant
    last_seen_at: Instant
    example_call_ids: list[str]


class CampaignRejections(BaseModel):
    """`GET /v1/campaigns/{id}/rejections`."""

    campaign_id: str
    tenant_id: str
    items: list[CampaignRejection]


class TenantRejection(CampaignRejection):
    tenant_id: str


class UnattributedRejections(BaseModel):
    """`GET /v1/rejections/unattributed`: rejections whose record named its tenant but no
    campaign one could read."""

    items: list[TenantRejection]


class CampaignPage(BaseModel):
    items: list[Campaign]
    next_cursor: str | None


class AlertPage(BaseModel):
    items: list[AlertV1]
    next_cursor: str | None


class TracedCall(BaseModel):
    """A call as `GET /v1/calls` lists it (IT-SC-1: every silent call is traced): its
    instants, outcome (`silent`, `abandoned`, `answered`, `amd_machine`, `unanswered`; null
    while only a lockout hit of it is known), the per-call rules it broke (`rule_hits`,
    e.g. `it-silent-lockout`, `it-long-silent-wait`, `it-calling-hours`) and the callee as
    its keyed pseudonym (`callee_key`; the raw number is never stored)."""

    tenant_id: str
    campaign_id: str
    call_id: str
    originated_at: Instant
    answered_at: Instant | None
    agent_connected_at: Instant | None
    ended_at: Instant | None
    outcome: CallOutcomeName | None
    dial_mode: str | None
    callee_key: str | None
    rule_hits: list[str]


class CallPage(BaseModel):
    items: list[TracedCall]
    next_cursor: str | None


HistoryKind = Literal["opened", "updated", "resolved", "acknowledged", "note"]


class AlertTransition(BaseModel):
    """One change of an alert, in order (`seq`, the alert_history feed SSE and webhooks
    deliver): `opened`, `updated` (severity or figures), `resolved`, `acknowledged` or
    `note`, with the alert's state and figures at that moment; an ack or note names its
    `author` (the token's name) and holds its `note`."""

    seq: int
    kind: HistoryKind
    state: Literal["firing", "resolved"]
    severity: Severity
    value: float | None
    numerator: float
    denominator: float
    recorded_at: Instant
    author: str | None = None
    note: str | None = None


class AlertNote(BaseModel):
    """A note on an alert (given with the ack or later), with its author and time."""

    author: str
    note: str
    recorded_at: Instant


class AlertDetail(AlertV1):
    """An alert with its acknowledgement note, its notes and every change it went
    through. `acknowledged_by` is the acknowledging token's name (its prefix for a token
    created without a name)."""

    ack_note: str | None = None
    notes: list[AlertNote] = Field(default_factory=list)
    history: list[AlertTransition] = Field(default_factory=list)


NoteText = Annotated[str, Field(max_length=2000)]


class AlertChange(BaseModel):
    """One alert_history row for `GET /v1/alerts/stream` (`event: alert`, `id: <seq>`):
    the alert as it is now (as `GET /v1/alerts/{id}` returns it, without `history`), the
    row's `seq`, and the `change` that row recorded."""

    seq: int
    alert: AlertV1
    ack_note: str | None = None
    change: AlertTransition

    def event_data(self) -> dict[str, Any]:
        return {
            **self.alert.model_dump(mode="json"),
            "ack_note": self.ack_note,
            "seq": self.seq,
            "change": self.change.model_dump(mode="json"),
        }


class AckRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: NoteText = ""


class NoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: Annotated[str, Field(min_length=1, max_length=2000)]


Number = int | float  # an int when the exact figure is integral, else its nearest float
Verdict = Literal["ok", "warning", "violation", "insufficient"]


class ComplianceWindow(BaseModel):
    """One regulatory window of a rate rule `[start, end)` with its verdict.

    `value` is numerator ÷ denominator (null when the denominator is 0); `headroom` is how
    many more silent/abandoned calls the window can take at this volume before its verdict
    becomes `violation`: from the minimum sample on, before its value exceeds `cap`; below
    it ("insufficient"), before the numerator passes cap × minimum sample (the certain
    violation), so 1 silent of 1 answered at 3 % shows 2, never 0 (-1: unbounded);
    `reason` says why the window has its verdict (e.g.
    "certain: 4 silent calls exceed 3 % of the 100-call minimum sample (at most 3),
    whatever the denominator (99 answered-by-person calls so far)"); `reference` is the
    regulation the rule implements.
    """

    rule: str
    window: str
    start: Instant
    end: Instant
    numerator: Number
    denominator: Number
    value: Number | None
    cap: Number
    verdict: Verdict
    headroom: Annotated[
        int,
        Field(
            description="More silent/abandoned calls (each also answered) before the verdict "
            "becomes violation; below the minimum sample, before the certain violation "
            "(numerator above cap × minimum sample); -1: unbounded"
        ),
    ]
    reason: str
    reference: str


class CampaignCompliance(BaseModel):
    """`GET /v1/campaigns/{id}/compliance`: the profile's regulatory windows, in rule order
    and, within a rule, in time order."""

    campaign_id: str
    tenant_id: str | None = None
    profile: str
    windows: list[ComplianceWindow]


class ChartRule(BaseModel):
    """The rate rule a campaign's chart follows: `metric` (`silent`, `abandoned`) over a
    trailing `window` (`15m`, ...), with the profile's `cap` and warning level (fractions)
    and the minimum sample below which a value is not judged."""

    id: str
    metric: str
    window: str
    cap: float
    warning: float
    min_sample: int


class CampaignMinutes(BaseModel):
    """`GET /v1/campaigns/{id}/minutes`: one column per figure, element i being the minute
    `from + i min` of [from, to). `value` is `rule`'s rate over the trailing window ending
    with that minute (null when its denominator is 0; `rule` and `value` are null for a
    profile without rate rules)."""

    model_config = ConfigDict(populate_by_name=True)

    campaign_id: str
    tenant_id: str
    profile: str
    from_: Annotated[Instant, Field(alias="from")]
    to: Instant
    attempts: list[int]
    answered_by_person: list[int]
    silent: list[int]
    abandoned: list[int]
    rule: ChartRule | None = None
    value: list[float | None] | None = None


class Readiness(BaseModel):
    database: Literal["ok", "unreachable"]
    consumer: Literal["running", "stopped", "disabled"]
    # Absent when the api does not consume (no broker to check).
    broker: Literal["ok", "unreachable", "recovering"] | None = None
