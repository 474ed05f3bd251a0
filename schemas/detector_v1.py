"""The detector's own messages (v1): between its two stages, its settings table and its
dead letters. Each is written and read in one place, `services.detector.wire`; these
models say what is on the wire (their JSON Schemas are in schemas/json) and the tests hold
the hand-built encodings of the hot path to them (tests/unit/test_wire.py).

- `CalleeBatchV1` on `<app_id>-callee-calls`: the calls the CDR stage forwards to the
  per-callee stage, one envelope per destination partition and batch.
- `LockoutViolationV1` on `<app_id>-lockout-violations`: a lockout or frequency-cap
  violation the per-callee stage found, keyed by campaign like the CDR topic.
- `CampaignSettingsV1` on `cdrwatch.campaigns.v1` (compacted, keyed `tenant/campaign`):
  a campaign's profile as `PUT /v1/campaigns/{id}` set it.
- `DeadLetterV1` on `cdrwatch.cdrs.dlq.v1`, keyed by the reason: a record the detector
  cannot apply, with where it came from.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.cdr_v1 import Instant

CALLEE_BATCH_VERSION = 1
# Calls per envelope: a row is ~80 bytes, so a record stays far below Kafka's 1 MB default.
MAX_CALLEES_PER_MESSAGE = 2000

CampaignId = Annotated[str, Field(min_length=1, max_length=200)]
TenantId = Annotated[str, Field(min_length=1, max_length=200)]

# A callee history row: [call_id, scoped campaign id, originated_at in µs since the epoch,
# agent guaranteed 0/1, trigger letters: s silent, a abandoned, m amd_machine, r refusal].
CalleeRow = tuple[str, str, int, Literal[0, 1], Annotated[str, Field(pattern="^[samr]*$")]]
# The callee key is the tenant and the pseudonymised callee, joined by U+001F.
CalleeKey = Annotated[str, Field(min_length=1, max_length=600)]


class CalleeBatchV1(BaseModel):
    """Calls for the per-callee stage, each with its callee key. A consumer also reads a
    bare `CalleeRow` keyed by its callee key (the form before envelopes)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1]
    calls: Annotated[list[tuple[CalleeKey, CalleeRow]], Field(max_length=MAX_CALLEES_PER_MESSAGE)]


class LockoutViolationV1(BaseModel):
    """Call `call_id` of the scoped campaign `campaign_id` (`tenant/campaign`) broke
    `rule_id`; `trigger_call_id` is the earlier call that created the lockout (null for a
    frequency cap)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule_id: Annotated[str, Field(min_length=1, max_length=120)]
    call_id: Annotated[str, Field(min_length=1, max_length=200)]
    campaign_id: Annotated[str, Field(min_length=3, max_length=401, pattern="/")]
    originated_at: Instant
    trigger_call_id: str | None


class CampaignSettingsV1(BaseModel):
    """A campaign's settings. `profile` null: the detector's default profile; `overrides`:
    that profile's parameters replaced for this campaign; `tenant_id` null: the default
    tenant. `updated_at` is set by the api (records written by hand may lack it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    campaign_id: CampaignId
    profile: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    amd_false_positive_ratio: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    tenant_id: TenantId | None = None
    updated_at: Instant | None = None


class DeadLetterSource(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    topic: str
    partition: int
    offset: int
    index: int | None = None  # the record's place in its envelope, if it came in one


class DeadLetterV1(BaseModel):
    """A record the detector or the raw-topic validator could not apply: `reason` (e.g.
    `too_late`, `unprocessable`, `invalid`), the `stage` that refused it, a `detail` or the
    validation `errors`, its `source` and the `record` itself (its JSON, or its text when
    it is not JSON)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reason: Annotated[str, Field(min_length=1, max_length=60)]
    stage: Annotated[str, Field(min_length=1, max_length=60)]
    detail: str | None = None
    errors: list[dict[str, Any]] | None = None
    source: DeadLetterSource
    record: Any = None
