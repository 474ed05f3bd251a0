"""Campaign compliance use case: the profile's regulatory windows over the stored minute
buckets (`GET /v1/campaigns/{id}/compliance`); the arithmetic is the detector core's
`evaluate_windows`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction

from services.api.campaigns import CampaignNotFound, RangeError
from services.api.models import Campaign, CampaignCompliance, ComplianceWindow
from services.api.store import AlertStore
from services.detector.core.compliance import WindowVerdict, evaluate_windows
from services.detector.core.model import EMPTY, BucketCounts
from services.detector.core.profiles import Profile, load_profile
from services.detector.core.rules import effective_amd_ratio
from services.detector.core.windows import (
    boundary_in,
    instant_us,
    minute_of,
    minute_start,
)

DEFAULT_PROFILE = "it"  # DetectorSettings.default_profile's default


def compliance_range(
    start: datetime | None, end: datetime | None
) -> tuple[datetime | None, datetime | None]:
    """The optional [from, to) of a compliance query: whole minutes, from < to when both."""
    for field, value in (("from", start), ("to", end)):
        if value is not None and (value.second or value.microsecond):
            raise RangeError(
                field, f"`{field}` must be on a minute boundary (seconds and fraction zero)"
            )
    if start is not None and end is not None and start >= end:
        raise RangeError("from", "`from` must be before `to`")
    return start, end


@dataclass(frozen=True, slots=True)
class PeriodAnchor:
    """Where a campaign's US 30-day periods start, and the heads splitting the minutes that
    hold a boundary (`windows.boundary_in`), as the detector published them."""

    first_call: datetime | None  # None: no head was published, the first minute's start
    heads: dict[int, BucketCounts]

    def head(self, minute: int) -> dict[str, int]:
        """The counts of `minute`'s calls before the boundary inside it (zeros if none)."""
        return self.heads.get(minute, EMPTY).as_dict()


async def period_anchor(
    store: AlertStore, campaign_id: str, *, tenant_id: str | None, first_minute: int | None
) -> PeriodAnchor:
    """The campaign's period anchor: the boundary of the head published for its first
    minute (`first_minute`, the earliest stored bucket) is its exact first call. Heads of
    other minutes count when their boundary is one of that anchor's (a head left from
    before a backfilled earlier call moved the anchor is ignored). Without a head for the
    first minute (figures of an older detector) the periods start at that minute."""
    if first_minute is None:
        return PeriodAnchor(None, {})
    rows = await store.minute_heads(campaign_id, tenant_id=tenant_id)
    first = rows.get(minute_start(first_minute))
    if first is None:
        return PeriodAnchor(None, {})
    anchor_us = instant_us(first[0])
    heads = {
        minute_of(start): BucketCounts(**counts)
        for start, (boundary, counts) in rows.items()
        if boundary_in(minute_of(start), anchor_us) == instant_us(boundary)
    }
    return PeriodAnchor(first[0], heads)


def judged_by(campaign: Campaign | None, default_profile: str) -> tuple[Profile, Fraction]:
    """The profile a campaign is judged by (configured, else reported, else the default,
    with its overrides) and its effective AMD false-positive ratio."""
    name = (campaign.profile if campaign else None) or default_profile
    profile = load_profile(name, (campaign.overrides if campaign else None) or None)
    own = campaign.amd_false_positive_ratio if campaign else 0
    return profile, effective_amd_ratio(Fraction(str(own or 0)), profile.amd_false_positive_ratio)


async def campaign_compliance(
    store: AlertStore,
    campaign_id: str,
    *,
    tenant_id: str | None,
    default_profile: str = DEFAULT_PROFILE,
    start: datetime | None = None,
    end: datetime | None = None,
) -> CampaignCompliance:
    """Every regulatory window of the campaign's profile over all its stored buckets.

    The profile is the configured one (PUT, with its overrides), else the one the detector
    reported for the campaign, else `default_profile`; the AMD false-positive ratio is the
    campaign's setting, else the profile's (rules.effective_amd_ratio, as in the
    detector). With `start`/`end`, only windows
    overlapping [start, end) are returned, and the cumulative window always. US periods
    start at the campaign's exact first call, each boundary minute split by its head
    (`period_anchor`). The campaign is the tenant's (`tenant_id` None: the default tenant's); an
    unknown one raises CampaignNotFound.
    """
    campaign = await store.get_campaign(campaign_id, tenant_id=tenant_id)
    if campaign is None:
        raise CampaignNotFound(campaign_id)
    profile, ratio = judged_by(campaign, default_profile)
    rows = await store.minute_buckets(campaign_id, tenant_id=campaign.tenant_id)
    buckets = {minute_of(at): BucketCounts(**counts) for at, counts in rows.items()}
    anchor = await period_anchor(
        store, campaign_id, tenant_id=campaign.tenant_id, first_minute=min(buckets, default=None)
    )
    verdicts = evaluate_windows(
        profile,
        buckets,
        amd_false_positive_ratio=ratio,
        first_call=anchor.first_call,
        heads=anchor.heads,
    )
    return CampaignCompliance(
        campaign_id=campaign_id,
        tenant_id=campaign.tenant_id,
        profile=profile.name,
        windows=[
            _window(profile, v)
            for v in verdicts
            if v.window == "cumulative"
            or ((start is None or v.end > start) and (end is None or v.start < end))
        ],
    )


def _window(profile: Profile, verdict: WindowVerdict) -> ComplianceWindow:
    references = {rule.id: rule.reference for rule in profile.rate_rules}
    return ComplianceWindow(
        rule=verdict.rule_id,
        window=verdict.window,
        start=verdict.start,
        end=verdict.end,
        numerator=_number(verdict.numerator),
        denominator=_number(verdict.denominator),
        value=None if verdict.value is None else _number(verdict.value),
        cap=_number(verdict.cap),
        verdict=verdict.verdict,
        headroom=verdict.headroom,
        reason=verdict.reason,
        reference=references[verdict.rule_id],
    )


def _number(value: Fraction) -> int | float:
    return value.numerator if value.denominator == 1 else float(value)
