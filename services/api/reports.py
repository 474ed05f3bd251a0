"""The audit pack (`GET /v1/reports/compliance`, `cdrwatch report`): per campaign, the
calendar days of the profile's zone and the profile's regulatory windows over a period,
with the alerts (acks, notes, history), the traced calls and the rule sources in force.

Nothing here re-derives a verdict: the regulatory windows are the compliance view's
(`services.api.compliance.campaign_compliance`), and a day's verdict is the detector
core's `evaluate_windows` with the campaign's rate rules judged over calendar days
(`_as_calendar_days`). Renderings (CSV, PDF) are in `services.api.report_render`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from datetime import date, datetime
from fractions import Fraction
from importlib import resources

from pydantic import BaseModel, Field

from schemas.alert_v1 import AlertV1
from schemas.stats_v1 import rate
from services.api.campaigns import CampaignNotFound
from services.api.compliance import DEFAULT_PROFILE, campaign_compliance, judged_by
from services.api.models import AlertDetail, ComplianceWindow, Number, TracedCall, Verdict
from services.api.store import AlertStore
from services.detector.core.compliance import evaluate_windows
from services.detector.core.model import BucketCounts
from services.detector.core.profiles import Profile, RateRule
from services.detector.core.windows import (
    local_day_bounds,
    local_day_of,
    minute_of,
    minute_start,
)

# Traced calls listed per campaign; beyond it `calls_truncated` says so (the full list is
# `GET /v1/calls`, paged).
MAX_REPORT_CALLS = 5000
_PAGE = 1000
_REVIEWED_PREFIX = "reviewed:"


class RuleSource(BaseModel):
    """One number or rule of the profile in force, with the source its file cites and the
    date it was last checked against it (`reviewed`, when the file says)."""

    key: str
    source: str
    reviewed: date | None = None


class DayRule(BaseModel):
    """One rate rule of the profile judged over one calendar day alone: the day's figure
    against the rule's cap. Regulatory only when the rule's own window is a calendar day
    (uk); for `it` (whole campaign) and `us` (30-day periods) it shows how each day
    contributed, the regulator's verdict is the window's."""

    rule: str
    metric: str
    numerator: Number
    denominator: Number
    value: Number | None
    cap: Number
    verdict: Verdict
    headroom: int | None
    reason: str


class ReportDay(BaseModel):
    """One calendar day of the profile's zone holding calls: `start`/`end` its bounds in
    UTC (23 or 25 h on DST change days); `partial` when the report period cuts it (its
    figures then cover only the part inside the period)."""

    date: date
    start: datetime
    end: datetime
    partial: bool
    attempts: int
    answered: int
    answered_by_person: int
    amd_machine: int
    silent: int
    abandoned: int
    out_of_hours: int
    short_ring: int
    silent_rate: float | None
    abandoned_rate: float | None
    out_of_hours_rate: float | None
    rules: list[DayRule]


class CampaignReport(BaseModel):
    campaign_id: str
    tenant_id: str
    profile: str
    profile_title: str
    profile_reviewed: date
    profile_sha256: str | None = Field(
        description="SHA-256 of the shipped profile file in force (null for an unknown file)"
    )
    overrides: dict[str, object]
    zone: str
    primary_rule: str | None = Field(
        description="The profile's first enabled rate rule: the one the chart and the "
        "CSV's day rows judge each day against"
    )
    days: list[ReportDay]
    windows: list[ComplianceWindow]
    alerts: list[AlertDetail]
    calls: list[TracedCall]
    calls_truncated: bool
    rule_sources: list[RuleSource]


class ComplianceReport(BaseModel):
    """`GET /v1/reports/compliance?format=json`: the period `[from, to)` and one entry per
    campaign, in campaign id order."""

    model_config = {"populate_by_name": True}

    generated_at: datetime
    from_: datetime = Field(alias="from")
    to: datetime
    tenant_id: str
    campaigns: list[CampaignReport]


async def compliance_report(
    store: AlertStore,
    *,
    tenant_id: str,
    campaign_ids: Sequence[str],
    start: datetime,
    end: datetime,
    now: datetime,
    default_profile: str = DEFAULT_PROFILE,
) -> ComplianceReport:
    """The audit pack of the tenant's campaigns over [start, end): `campaign_ids`, or every
    campaign of the tenant when empty. An unknown campaign raises CampaignNotFound."""
    ids = sorted(set(campaign_ids)) or await _tenant_campaigns(store, tenant_id)
    reports = [
        await _campaign_report(store, tenant_id, campaign_id, start, end, default_profile)
        for campaign_id in ids
    ]
    return ComplianceReport.model_validate(
        {
            "generated_at": now,
            "from": start,
            "to": end,
            "tenant_id": tenant_id,
            "campaigns": reports,
        }
    )


async def _tenant_campaigns(store: AlertStore, tenant_id: str) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        page = await store.list_campaigns(tenant_id=tenant_id, cursor=cursor, limit=_PAGE)
        ids.extend(c.campaign_id for c in page.items)
        cursor = page.next_cursor
        if cursor is None:
            return sorted(ids)


async def _campaign_report(
    store: AlertStore,
    tenant_id: str,
    campaign_id: str,
    start: datetime,
    end: datetime,
    default_profile: str,
) -> CampaignReport:
    campaign = await store.get_campaign(campaign_id, tenant_id=tenant_id)
    if campaign is None:
        raise CampaignNotFound(campaign_id)
    # The compliance view's profile choice (configured, else reported, else the default).
    profile, ratio = judged_by(campaign, default_profile)
    view = await campaign_compliance(
        store,
        campaign_id,
        tenant_id=tenant_id,
        default_profile=default_profile,
        start=start,
        end=end,
    )
    rows = await store.minute_buckets(campaign_id, tenant_id=tenant_id)
    buckets = {
        minute_of(at): BucketCounts(**counts) for at, counts in rows.items() if start <= at < end
    }
    calls, truncated = await _calls(store, tenant_id, campaign_id, start, end)
    rules = [r for r in profile.rate_rules if r.enabled]
    return CampaignReport(
        campaign_id=campaign_id,
        tenant_id=tenant_id,
        profile=profile.name,
        profile_title=profile.title,
        profile_reviewed=profile.reviewed,
        profile_sha256=_profile_digest(profile.name),
        overrides=dict(campaign.overrides or {}),
        zone=profile.home_zone,
        primary_rule=rules[0].id if rules else None,
        days=_days(profile, rules, buckets, ratio, start, end),
        windows=view.windows,
        alerts=await _alerts(store, tenant_id, campaign_id, start, end),
        calls=calls,
        calls_truncated=truncated,
        rule_sources=rule_sources(profile),
    )


def _as_calendar_days(profile: Profile, rules: Sequence[RateRule]) -> Profile:
    """The profile with its enabled rate rules judged per calendar day of its zone."""
    daily = tuple(dataclasses.replace(rule, window="calendar_day") for rule in rules)
    return dataclasses.replace(profile, rate_rules=daily)


def _days(
    profile: Profile,
    rules: Sequence[RateRule],
    buckets: dict[int, BucketCounts],
    ratio: Fraction,
    start: datetime,
    end: datetime,
) -> list[ReportDay]:
    totals: dict[date, BucketCounts] = {}
    for minute in sorted(buckets):
        day = local_day_of(minute, profile.home_zone)
        totals[day] = totals.get(day, BucketCounts()).merge(buckets[minute])
    verdicts = evaluate_windows(
        _as_calendar_days(profile, rules), buckets, amd_false_positive_ratio=ratio
    )
    metrics = {rule.id: rule.metric for rule in rules}
    by_day: dict[date, list[DayRule]] = {}
    for verdict in verdicts:
        day = local_day_of(minute_of(verdict.start), profile.home_zone)
        by_day.setdefault(day, []).append(
            DayRule(
                rule=verdict.rule_id,
                metric=metrics[verdict.rule_id],
                numerator=_number(verdict.numerator),
                denominator=_number(verdict.denominator),
                value=None if verdict.value is None else _number(verdict.value),
                cap=_number(verdict.cap),
                verdict=verdict.verdict,
                # "insufficient" has no headroom to speak of (the sample is too small).
                headroom=None if verdict.verdict == "insufficient" else verdict.headroom,
                reason=verdict.reason,
            )
        )
    days = []
    for day, counts in totals.items():
        figures = counts.as_dict()
        first, last = local_day_bounds(day, profile.home_zone)
        day_start, day_end = minute_start(first), minute_start(last)
        days.append(
            ReportDay(
                date=day,
                start=day_start,
                end=day_end,
                partial=day_start < start or day_end > end,
                **figures,
                silent_rate=rate(figures["silent"], figures["answered_by_person"]),
                abandoned_rate=rate(figures["abandoned"], figures["answered_by_person"]),
                out_of_hours_rate=rate(figures["out_of_hours"], figures["attempts"]),
                rules=by_day.get(day, []),
            )
        )
    return days


async def _alerts(
    store: AlertStore, tenant_id: str, campaign_id: str, start: datetime, end: datetime
) -> list[AlertDetail]:
    """The campaign's alerts whose window overlaps [start, end) (an alert on the whole
    campaign always does), each with its acknowledgement, note and history, oldest first."""
    found: list[AlertV1] = []
    cursor = None
    while True:
        page = await store.list_alerts(
            tenant_id=tenant_id, campaign_id=campaign_id, cursor=cursor, limit=_PAGE
        )
        found.extend(a for a in page.items if a.window.start < end and a.window.end > start)
        cursor = page.next_cursor
        if cursor is None:
            break
    details = []
    for alert in sorted(found, key=lambda a: (a.window.start, a.opened_at, a.id)):
        detail = await store.get_alert(alert.id, tenant_id=tenant_id)
        if detail is not None:
            details.append(detail)
    return details


async def _calls(
    store: AlertStore, tenant_id: str, campaign_id: str, start: datetime, end: datetime
) -> tuple[list[TracedCall], bool]:
    """The campaign's traced calls (silent, abandoned, or breaking a per-call rule) with
    originated_at in [start, end), oldest first, at most MAX_REPORT_CALLS."""
    found: list[TracedCall] = []
    cursor = None
    while len(found) <= MAX_REPORT_CALLS:
        page = await store.list_calls(
            tenant_id=tenant_id,
            campaign_id=campaign_id,
            start=start,
            end=end,
            cursor=cursor,
            limit=_PAGE,
        )
        found.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    truncated = len(found) > MAX_REPORT_CALLS or cursor is not None
    # Pages are newest first: the oldest MAX_REPORT_CALLS are not what was fetched, so a
    # truncated list keeps the newest ones, reported oldest first.
    kept = found[:MAX_REPORT_CALLS]
    return list(reversed(kept)), truncated


def rule_sources(profile: Profile) -> list[RuleSource]:
    """Every parameter and rule of the profile with the source its file cites."""
    reviewed = {
        key.removeprefix(_REVIEWED_PREFIX): value
        for key, value in profile.sources.items()
        if key.startswith(_REVIEWED_PREFIX)
    }
    return [
        RuleSource(
            key=key,
            source=source,
            reviewed=date.fromisoformat(reviewed[key]) if key in reviewed else None,
        )
        for key, source in profile.sources.items()
        if not key.startswith(_REVIEWED_PREFIX)
    ]


def _profile_digest(name: str) -> str | None:
    path = resources.files("services.detector").joinpath("profiles", f"{name}.toml")
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _number(value: Fraction) -> int | float:
    return value.numerator if value.denominator == 1 else float(value)
