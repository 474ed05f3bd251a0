"""Campaign use cases: configuring a campaign (PUT) and its stats over a range."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from schemas.stats_v1 import StatsV1, stats_from_counts
from services.api.models import Campaign, CampaignConfig, CampaignUpdate
from services.api.publisher import CampaignPublisher
from services.api.store import AlertStore

MINUTE = timedelta(minutes=1)
DEFAULT_STATS_SPAN = timedelta(hours=24)
# Override numbers beyond this are refused (422): they cannot be a real setting, and an
# integer beyond 64 bits cannot even be published (JSON encoders refuse it).
MAX_OVERRIDE_MAGNITUDE = 2**53


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
        except (ArithmeticError, ValueError, TypeError) as exc:
            raise CampaignConfigError("overrides", f"refused override: {exc}") from None


def check_numbers(value: Any, path: str) -> None:
    """Refuse non-finite floats and numbers of absurd magnitude anywhere in `value`,
    naming the key (`overrides.min_sample`)."""
    if isinstance(value, bool):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise CampaignConfigError(path, f"`{path}` must be a finite number")
    if isinstance(value, int | float) and abs(value) > MAX_OVERRIDE_MAGNITUDE:
        raise CampaignConfigError(path, f"`{path}` is out of range (|x| <= 2^53)")
    if isinstance(value, Mapping):
        for key, item in value.items():
            check_numbers(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_numbers(item, f"{path}[{index}]")


def target_tenant(
    update: CampaignUpdate,
    *,
    campaign_id: str,
    tenant_scope: str | None,
    tenant: str | None,
    default_tenant: str,
) -> str:
    """The tenant whose campaign a PUT writes. A tenant-bound token writes its own: naming
    another tenant in the query is CampaignNotFound (as for any campaign it cannot see),
    in the body TenantForbidden. A token bound to no tenant writes the tenant named in the
    query or the body (they must agree), else the default tenant."""
    body = update.tenant_id if "tenant_id" in update.model_fields_set else None
    if tenant_scope is not None:
        if tenant is not None and tenant != tenant_scope:
            raise CampaignNotFound(campaign_id)
        if body is not None and body != tenant_scope:
            raise TenantForbidden("a tenant-bound token cannot assign another tenant")
        return tenant_scope
    if tenant is not None and body is not None and tenant != body:
        raise CampaignConfigError("tenant_id", "`tenant_id` differs from the `tenant` query")
    return tenant or body or default_tenant


def decide_config(
    current: CampaignConfig | None,
    update: CampaignUpdate,
    *,
    campaign_id: str,
    tenant_id: str,
    profiles: ProfileValidator,
    now: datetime,
) -> CampaignConfig:
    """The configuration a PUT of the tenant's campaign leads to: keys given replace stored
    ones, keys left out keep them."""
    values = (current or CampaignConfig(campaign_id=campaign_id, updated_at=now)).model_dump()
    values.update({key: getattr(update, key) for key in update.model_fields_set})
    values["overrides"] = values["overrides"] or {}
    values["amd_false_positive_ratio"] = values["amd_false_positive_ratio"] or 0.0
    check_numbers(values["overrides"], "overrides")
    check_numbers(values["amd_false_positive_ratio"], "amd_false_positive_ratio")
    values["tenant_id"] = tenant_id
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
    tenant: str | None = None,
    default_tenant: str = "default",
) -> Campaign:
    """Validate, publish to the detector, and store; nothing is stored unless published.
    `tenant_scope` is the token's tenant, `tenant` the one the request names."""
    owner = target_tenant(
        update,
        campaign_id=campaign_id,
        tenant_scope=tenant_scope,
        tenant=tenant,
        default_tenant=default_tenant,
    )
    return await store.put_campaign(
        campaign_id,
        lambda current: decide_config(
            current,
            update,
            campaign_id=campaign_id,
            tenant_id=owner,
            profiles=profiles,
            now=now,
        ),
        publisher.publish,
        tenant_id=owner,
    )


def stats_range(
    start: datetime | None,
    end: datetime | None,
    now: datetime,
    *,
    default_span: timedelta = DEFAULT_STATS_SPAN,
    max_span: timedelta | None = None,
) -> tuple[datetime, datetime]:
    """The [from, to) of a minute-bucket query. Both ends must be whole minutes and
    from < to (and at most `max_span` apart when given). A missing `to` is the next minute
    boundary after now (so the current minute counts); a missing `from` is `default_span`
    before `to`."""
    for field, value in (("from", start), ("to", end)):
        if value is not None and (value.second or value.microsecond):
            raise RangeError(
                field, f"`{field}` must be on a minute boundary (seconds and fraction zero)"
            )
    if end is None:
        end = now.replace(second=0, microsecond=0) + MINUTE
    if start is None:
        start = end - default_span
    if start >= end:
        raise RangeError("from", "`from` must be before `to`")
    if max_span is not None and end - start > max_span:
        raise RangeError("from", f"the range must not be longer than {_span_text(max_span)}")
    return start, end


def _span_text(span: timedelta) -> str:
    days = span / timedelta(days=1)
    return f"{days:g} days" if days >= 1 else f"{span / timedelta(hours=1):g} hours"


async def campaign_stats(
    store: AlertStore, campaign_id: str, start: datetime, end: datetime, tenant_id: str | None
) -> StatsV1:
    """Exact counts and rates of the tenant's campaign's calls with originated_at in
    [start, end)."""
    tenant = tenant_id or store.default_tenant
    counts = await store.sum_stats(campaign_id, start, end, tenant_id=tenant)
    if counts is None:
        raise CampaignNotFound(campaign_id)
    return stats_from_counts(campaign_id, start, end, counts, tenant_id=tenant)
