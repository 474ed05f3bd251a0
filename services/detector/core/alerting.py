"""Alert lifecycle (SPEC "Alert lifecycle"): one alert per (rule, campaign, window).

An alert opens when its window reaches the warning level (or violation) with the minimum
sample, or at once when a violation is certain below it (`rules.certain_violation`: more
silent calls than the cap allows in the whole minimum sample); its severity then moves in
place (warning ↔ violation); it resolves when the value falls below the warning level or
the sample below the minimum (unless the violation is certain). Levels are a pure
function of the figures, so the same traffic always yields the same transitions, in any
order of replay. Ids are UUIDv5 of (rule, campaign, window key): a replay re-publishes
the same id and downstream upserts it, never duplicating.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal, TypedDict

from services.detector.core.rules import Level

_NAMESPACE = uuid.UUID("6f1c1f0e-2a55-5c1e-9d3b-7c0d5e1a9b42")

Severity = Literal["warning", "violation"]
State = Literal["firing", "resolved"]


class AlertWindow(TypedDict):
    start: datetime
    end: datetime


class AlertEvidence(TypedDict):
    call_ids: list[str]


class AlertUpdate(TypedDict):
    """An alert as the engine publishes it: the fields of `schemas.alert_v1.AlertV1`
    but the tenant (the detector splits the scoped campaign id), datetimes aware in UTC.
    The detector encodes it as is (`services.detector.wire`); tests hold the encoding to
    the model."""

    id: str
    rule: str
    profile: str
    campaign_id: str  # scoped: tenant and campaign
    severity: Severity
    state: State
    value: float | None
    threshold: float
    numerator: int | float
    denominator: int | float
    window: AlertWindow
    opened_at: datetime
    resolved_at: datetime | None
    evidence: AlertEvidence
    reference: str


@functools.lru_cache(maxsize=1 << 16)
def alert_id(rule_id: str, campaign_id: str, window_key: str) -> str:
    """Deterministic id from rule, campaign and window key (the window's start, or a
    fixed key such as `cumulative` for whole-campaign windows). Memoised: the engine asks
    for it at every judgement of every touched window, and a UUIDv5 (SHA-1, a UUID
    object, its text) was 1.3 % of the detector in py-spy (bench/README.md, eleventh
    pass); a window's judgements recur batch after batch with the same three strings."""
    return str(uuid.uuid5(_NAMESPACE, f"{rule_id}\x1f{campaign_id}\x1f{window_key}"))


@dataclass(frozen=True, slots=True)
class AlertStatus:
    """What the detector remembers of one alert between batches."""

    id: str
    window_key: str
    severity: Severity
    state: State
    opened_at: datetime
    resolved_at: datetime | None = None
    # A rolling window's episode: the minute whose completed window resolved it (its
    # figures are that window's; see Engine._rolling_transition).
    closed_end: int | None = None


def advance(
    previous: AlertStatus | None, level: Level, new_id: str, window_key: str, now: datetime
) -> AlertStatus | None:
    """The alert's next status given the window's level, or None when there is no alert.

    `new_id`/`window_key` identify the alert that would open now if none is firing; an
    already firing alert keeps its own id (an episode of a rolling window keeps the id
    of its first breaching window until it resolves).
    """
    firing = previous is not None and previous.state == "firing"
    if level in ("warning", "violation"):
        severity: Severity = "violation" if level == "violation" else "warning"
        if firing:
            assert previous is not None
            return (
                previous if previous.severity == severity else replace(previous, severity=severity)
            )
        if previous is not None and previous.id == new_id:
            # The same window breaches again: the alert re-opens in place.
            return replace(
                previous, severity=severity, state="firing", resolved_at=None, closed_end=None
            )
        return AlertStatus(new_id, window_key, severity, "firing", opened_at=now)
    if firing:
        assert previous is not None
        return replace(previous, state="resolved", resolved_at=now)
    return previous
