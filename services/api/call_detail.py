"""One traced call and every rule it counted for (`GET /v1/calls/{call_id}`).

A call counts for a rate rule through its outcome: the one-call counts its outcome gives
(`_one_call_counts`) go through the core's `rate_terms`, so "counts in the numerator /
denominator" is the detector's own arithmetic, not a second copy of it. The windows are
the compliance view's regulatory windows that hold the call's `originated_at`.
"""

from __future__ import annotations

from datetime import datetime
from fractions import Fraction
from typing import Literal

from pydantic import BaseModel

from services.api.compliance import DEFAULT_PROFILE, campaign_compliance, judged_by
from services.api.models import ComplianceWindow, TracedCall
from services.api.store import AlertStore
from services.detector.core.model import BucketCounts
from services.detector.core.rules import rate_terms

Role = Literal["numerator and denominator", "denominator", "estimate", "numerator"]


class CallNotFound(LookupError):
    """No traced call with this id in the tenant's campaign."""


class RuleHit(BaseModel):
    """A per-call rule the call broke, with the regulation it implements."""

    rule: str
    reference: str


class CountedFor(BaseModel):
    """A regulatory window of a rate rule holding the call, and how the call counts in it:
    in both terms of the rate (a silent call in the silent rate), in the denominator only
    (an answered call), or as Ofcom's AMD false-positive estimate (an AMD=machine call,
    ratio × 1 in both terms)."""

    rule: str
    metric: str
    counts_as: Role
    window: ComplianceWindow


class CallDetail(TracedCall):
    """A traced call as `GET /v1/calls` lists it, with the campaign's profile, the
    per-call rules it broke (with their references) and the rate windows it counted for.
    Only traced calls are kept (silent, abandoned, or breaking a per-call rule); a call
    known only by a lockout hit (`outcome` null) counts for no rate here."""

    profile: str
    rule_hit_references: list[RuleHit]
    counted_for: list[CountedFor]


def _one_call_counts(call: TracedCall, out_of_hours_rules: set[str]) -> BucketCounts | None:
    """The counts this call alone adds to its minute bucket (SPEC "Classification"): a
    silent call is also abandoned and answered by a person."""
    outcome = call.outcome
    if outcome is None:
        return None
    person = outcome in ("silent", "abandoned", "answered")
    return BucketCounts(
        attempts=1,
        answered=int(person or outcome == "amd_machine"),
        answered_by_person=int(person),
        amd_machine=int(outcome == "amd_machine"),
        silent=int(outcome == "silent"),
        abandoned=int(outcome in ("silent", "abandoned")),
        out_of_hours=int(bool(out_of_hours_rules & set(call.rule_hits))),
    )


async def call_detail(
    store: AlertStore,
    call_id: str,
    *,
    tenant_id: str,
    campaign_id: str,
    default_profile: str = DEFAULT_PROFILE,
) -> CallDetail:
    call = await store.get_call(call_id, tenant_id=tenant_id, campaign_id=campaign_id)
    if call is None:
        raise CallNotFound(call_id)
    campaign = await store.get_campaign(campaign_id, tenant_id=tenant_id)
    profile, ratio = judged_by(campaign, default_profile)
    references: dict[str, str] = {r.id: r.reference for r in profile.per_call_rules}
    references.update({r.id: r.reference for r in profile.lockouts})
    references.update({r.id: r.reference for r in profile.frequency_caps})
    hours_rules = {r.id for r in profile.per_call_rules if r.check == "out_of_hours"}
    counts = _one_call_counts(call, hours_rules)
    counted: list[CountedFor] = []
    if counts is not None and campaign is not None:
        metrics = {rule.id: rule.metric for rule in profile.rate_rules}
        view = await campaign_compliance(
            store, campaign_id, tenant_id=tenant_id, default_profile=default_profile
        )
        for window in view.windows:
            if not _holds(window, call.originated_at):
                continue
            metric = metrics[window.rule]
            role = _role(metric, counts, ratio)
            if role is not None:
                counted.append(
                    CountedFor(rule=window.rule, metric=metric, counts_as=role, window=window)
                )
    return CallDetail(
        **call.model_dump(),
        profile=profile.name,
        rule_hit_references=[
            RuleHit(rule=hit, reference=references.get(hit, "")) for hit in call.rule_hits
        ],
        counted_for=counted,
    )


def _holds(window: ComplianceWindow, instant: datetime) -> bool:
    return window.start <= instant < window.end


def _role(metric: str, counts: BucketCounts, ratio: Fraction) -> Role | None:
    numerator, denominator = rate_terms(metric, counts, ratio)
    if numerator == denominator == 0:
        return None
    if counts.amd_machine and not counts.answered_by_person:
        return "estimate"
    if numerator and denominator:
        return "numerator and denominator"
    return "denominator" if denominator else "numerator"
