"""Alert v1 (SPEC "Alerts"): one alert per (rule, tenant, campaign, window), id
deterministic."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.cdr_v1 import Instant

Severity = Literal["warning", "violation"]
AlertState = Literal["firing", "resolved"]


class AlertWindow(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    start: Instant
    end: Instant


class AlertEvidence(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    call_ids: Annotated[list[str], Field(max_length=20)] = Field(default_factory=list)


class AlertV1(BaseModel):
    """An alert as the detector publishes it on `cdrwatch.alerts.v1` and the API serves it.

    `value`, `threshold`, `numerator` and `denominator` are display figures; verdicts were
    reached with exact rational arithmetic in the detector core.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Annotated[str, Field(min_length=1, max_length=80)]
    rule: Annotated[str, Field(min_length=1, max_length=120)]
    profile: Annotated[str, Field(min_length=1, max_length=60)]
    campaign_id: Annotated[str, Field(min_length=1, max_length=200)]
    # The campaign's tenant (CONTRACT decision 3); null only in messages of older
    # detectors, read as the default tenant.
    tenant_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    severity: Severity
    state: AlertState
    value: float | None
    threshold: float | None
    numerator: int | float
    denominator: int | float
    window: AlertWindow
    opened_at: Instant
    resolved_at: Instant | None = None
    evidence: AlertEvidence = Field(default_factory=AlertEvidence)
    reference: str = ""
    acknowledged_by: str | None = None
    acknowledged_at: Instant | None = None
