"""Rate-rule evaluation: exact rational comparison of a window's rate against its cap.

SPEC "Rates and thresholds": caps are inclusive as the regulations word them ("at most 3
per 100"), so a violation is a value strictly above the cap; a warning is a value at or
above `warning_fraction` × cap (80 % by default); below the minimum sample (the rate's
denominator, 100 answered-by-person calls by default) the rule cannot fire. Arithmetic is
`Fraction` throughout: 3/100 is exactly 3/100, never 0.030000000000000002.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Literal

from services.detector.core.model import BucketCounts

Level = Literal["ok", "warning", "violation", "insufficient"]


@dataclass(frozen=True, slots=True)
class Measurement:
    """One rule over one window: the figures an alert shows and the level they reach."""

    rule_id: str
    window_key: str
    start: datetime
    end: datetime
    numerator: Fraction
    denominator: Fraction
    cap: Fraction
    level: Level

    @property
    def value(self) -> Fraction | None:
        return None if self.denominator == 0 else self.numerator / self.denominator


def rate_terms(
    metric: str, counts: BucketCounts, amd_false_positive_ratio: Fraction = Fraction(0)
) -> tuple[Fraction, Fraction]:
    """(numerator, denominator) of a rate rule's metric over `counts`.

    `silent` and `abandoned` divide by answered-by-person calls. The AMD false-positive
    estimate (ratio × AMD=machine calls, Ofcom's formula, 0 unless set per campaign) is
    added to both terms of the abandoned rate.
    """
    estimate = amd_false_positive_ratio * counts.amd_machine
    if metric == "silent":
        return Fraction(counts.silent), Fraction(counts.answered_by_person)
    if metric == "abandoned":
        return counts.abandoned + estimate, counts.answered_by_person + estimate
    if metric == "out_of_hours":
        return Fraction(counts.out_of_hours), Fraction(counts.attempts)
    raise ValueError(f"unknown rate metric {metric!r}")


def assess(
    numerator: Fraction,
    denominator: Fraction,
    cap: Fraction,
    warning_fraction: Fraction,
    min_sample: int,
) -> Level:
    """The level a rate reaches: `insufficient` below the minimum sample, `violation`
    strictly above the cap, `warning` at or above warning_fraction × cap, else `ok`."""
    if denominator < min_sample or denominator == 0:
        return "insufficient"
    value = numerator / denominator
    if value > cap:
        return "violation"
    if value >= warning_fraction * cap:
        return "warning"
    return "ok"


def headroom(numerator: Fraction, denominator: Fraction, cap: Fraction) -> int:
    """How many more silent/abandoned calls the window can take before the cap is exceeded,
    assuming each added call is also an answered call (it adds to both terms).

    Largest integer k ≥ 0 with (n + k) / (d + k) ≤ cap; 0 when already above. With cap ≥ 1
    the window can never breach and the answer is unbounded: reported as -1.
    """
    if cap >= 1:
        return -1
    # (n + k) ≤ cap (d + k)  ⇔  k (1 − cap) ≤ cap·d − n
    slack = cap * denominator - numerator
    if slack < 0:
        return 0
    return int(slack / (1 - cap))


def effective_amd_ratio(campaign_ratio: Fraction, profile_ratio: Fraction) -> Fraction:
    """The AMD false-positive ratio a campaign's UK formula uses: the campaign's own
    (`PUT /v1/campaigns/{id}` top-level `amd_false_positive_ratio`) when set above 0, else
    the profile's parameter (its file's value or a per-campaign override of it)."""
    return campaign_ratio if campaign_ratio > 0 else profile_ratio
