"""Campaign minute series use case (`GET /v1/campaigns/{id}/minutes`): the stored minute
buckets of a range as columns, with the profile's early-warning rate over the trailing
window at each minute, for charts (the dashboard's per-campaign chart)."""

from __future__ import annotations

from datetime import datetime, timedelta
from fractions import Fraction

from services.api.campaigns import MINUTE, CampaignNotFound, stats_range
from services.api.compliance import judged_by
from services.api.models import CampaignMinutes, ChartRule
from services.api.store import AlertStore
from services.detector.core.model import BucketCounts
from services.detector.core.profiles import Profile, RateRule
from services.detector.core.rules import rate_terms

DEFAULT_SPAN = timedelta(hours=3)
MAX_SPAN = timedelta(days=7)
_TRAILING = {"15m": 15, "1h": 60, "24h": 24 * 60}


def minutes_range(
    start: datetime | None, end: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """[from, to) of a minutes query: whole minutes, from < to, at most 7 days; `to`
    defaults to the end of the current minute, `from` to 3 h before `to`."""
    return stats_range(start, end, now, default_span=DEFAULT_SPAN, max_span=MAX_SPAN)


def chart_rule(profile: Profile) -> RateRule | None:
    """The rate the chart follows: the profile's shortest early-warning window (it uses the
    metric and cap of a regulatory rule), else its first enabled rate rule; None for a
    profile without rate rules (`fr`)."""
    rolling = [r for r in profile.early_warning if r.enabled and r.window in _TRAILING]
    if rolling:
        return min(rolling, key=lambda r: _TRAILING[r.window])
    return next((rule for rule in profile.rate_rules if rule.enabled), None)


async def campaign_minutes(
    store: AlertStore,
    campaign_id: str,
    *,
    tenant_id: str | None,
    default_profile: str,
    start: datetime,
    end: datetime,
) -> CampaignMinutes:
    """Counts of every minute in [start, end) (0 where nothing was counted) and, for the
    chart rule, the numerator and denominator of each minute and the rule's value over the
    trailing window ending with that minute (`rules.rate_terms`, with the campaign's AMD
    false-positive ratio). Unknown campaign: CampaignNotFound."""
    campaign = await store.get_campaign(campaign_id, tenant_id=tenant_id)
    if campaign is None:
        raise CampaignNotFound(campaign_id)
    profile, ratio = judged_by(campaign, default_profile)
    rule = chart_rule(profile)
    trailing = _TRAILING.get(rule.window, 1) if rule is not None else 1
    rows = await store.minute_buckets(
        campaign_id,
        tenant_id=campaign.tenant_id,
        start=start - MINUTE * (trailing - 1),
        end=end,
    )
    count = int((end - start) / MINUTE)
    first = start - MINUTE * (trailing - 1)
    buckets = [BucketCounts()] * (count + trailing - 1)
    for at, counts in rows.items():
        buckets[int((at - first) / MINUTE)] = BucketCounts(**counts)
    own = buckets[trailing - 1 :]
    result = CampaignMinutes(
        campaign_id=campaign_id,
        tenant_id=campaign.tenant_id,
        profile=profile.name,
        from_=start,
        to=end,
        attempts=[b.attempts for b in own],
        answered_by_person=[b.answered_by_person for b in own],
        silent=[b.silent for b in own],
        abandoned=[b.abandoned for b in own],
    )
    if rule is None:
        return result
    terms = [rate_terms(rule.metric, b, ratio) for b in buckets]
    values: list[float | None] = []
    numerator = sum((n for n, _ in terms[: trailing - 1]), Fraction(0))
    denominator = sum((d for _, d in terms[: trailing - 1]), Fraction(0))
    for index in range(trailing - 1, len(terms)):
        numerator += terms[index][0]
        denominator += terms[index][1]
        values.append(None if denominator == 0 else float(numerator / denominator))
        leaving = index - trailing + 1
        numerator -= terms[leaving][0]
        denominator -= terms[leaving][1]
    result.rule = ChartRule(
        id=rule.id,
        metric=rule.metric,
        window=rule.window,
        cap=float(rule.cap),
        warning=float(rule.cap * rule.warning_fraction),
        min_sample=rule.min_sample,
    )
    result.value = values
    return result
