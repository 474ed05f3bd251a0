"""Campaign use cases: configuring a campaign (PUT) and its stats over a range."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from schemas.stats_v1 import StatsV1, stats_from_counts
from services.api.models import Campaign, CampaignConfig, CampaignUpdate
from services.api.publisher import CampaignPublisher
from services.api.store import AlertStore

MINUTE = timedelta(minutes=1)
DEFAULT_STATS_SPAN = timedelta(hours=24)


class CampaignNotFound(LookupError):
    """Unknown campaign, or one of another tenant (the two are not told apart)."""


class CampaignConfigError(ValueError):
    """A refused configuration; `field` names the body key at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class TenantForbidden(PermissionError):
    """A tenant-bound token tried to assign a campaign to another tenant."""


class RangeError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class ProfileValidator(Protocol):
    def validate(self, profile: str, overrides: Mapping[str, Any]) -> None:
        """Raise CampaignConfigError when the profile or its overrides are refused."""


class DetectorProfiles:
    """Validates against the detector's shipped profiles (services.detector.core.profiles)."""

    def validate(self, profile: str, overrides: Mapping[str, Any]) -> None:
        from services.detector.core import profiles  # the api needs it only on PUT

        names: Iterable[str] = profiles.available_profiles()
        if profile not in names:
            raise CampaignConfigError(
                "profile", f"unknown profile {profile!r}; available: {', '.join(names)}"
            )
        try:
            profiles.load_profile(profile, dict(overrides))
        except profiles.ProfileError as exc:
            raise CampaignConfigError("overrides", str(exc)) from None


def decide_config(
    current: CampaignConfig | None,
    update: CampaignUpdate,
    *,
    campaign_id: str,
    tenant_scope: str | None,
    profiles: ProfileValidator,
    now: datetime,
) -> CampaignConfig:
    """The configuration a PUT leads to: keys given replace stored ones, keys left out keep
    them. A tenant-bound caller cannot see another tenant's campaign (CampaignNotFound) nor
    assign one to another tenant (TenantForbidden); its new campaigns get its tenant."""
    if current is not None and tenant_scope is not None and current.tenant_id != tenant_scope:
        raise CampaignNotFound(campaign_id)
    values = (current or CampaignConfig(campaign_id=campaign_id, updated_at=now)).model_dump()
    values.update({key: getattr(update, key) for key in update.model_fields_set})
    values["overrides"] = values["overrides"] or {}
    values["amd_false_positive_ratio"] = values["amd_false_positive_ratio"] or 0.0
    if tenant_scope is not None:
        if "tenant_id" in update.model_fields_set and update.tenant_id != tenant_scope:
            raise TenantForbidden("a tenant-bound token cannot assign another tenant")
        values["tenant_id"] = tenant_scope
    values["updated_at"] = now
    config = CampaignConfig.model_validate(values)
    if config.profile is None:
        if config.overrides:
            raise CampaignConfigError("overrides", "overrides need a profile: set `profile` too")
    else:
        profiles.validate(config.profile, config.overrides)
    return config


async def configure_campaign(
    store: AlertStore,
    publisher: CampaignPublisher,
    profiles: ProfileValidator,
    campaign_id: str,
    update: CampaignUpdate,
    *,
    tenant_scope: str | None,
    now: datetime,
) -> Campaign:
    """Validate, publish to the detector, and store; nothing is stored unless published."""
    return await store.put_campaign(
        campaign_id,
        lambda current: decide_config(
            current,
            update,
            campaign_id=campaign_id,
            tenant_scope=tenant_scope,
            profiles=profiles,
            now=now,
        ),
        publisher.publish,
    )


def stats_range(
    start: datetime | None, end: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """The [from, to) of a stats query. Both ends must be whole minutes and from < to. A
    missing `to` is the next minute boundary after now (so the current minute counts); a
    missing `from` is 24 h before `to`."""
    for field, value in (("from", start), ("to", end)):
        if value is not None and (value.second or value.microsecond):
            raise RangeError(
                field, f"`{field}` must be on a minute boundary (seconds and fraction zero)"
            )
    if end is None:
        end = now.replace(second=0, microsecond=0) + MINUTE
    if start is None:
        start = end - DEFAULT_STATS_SPAN
    if start >= end:
        raise RangeError("from", "`from` must be before `to`")
    return start, end


async def campaign_stats(
    store: AlertStore, campaign_id: str, start: datetime, end: datetime, tenant_scope: str | None
) -> StatsV1:
    """Exact counts and rates of the campaign's calls with originated_at in [start, end)."""
    counts = await store.sum_stats(campaign_id, start, end, tenant_id=tenant_scope)
    if counts is None:
        raise CampaignNotFound(campaign_id)
    return stats_from_counts(campaign_id, start, end, counts)
