"""Rate-rule evaluation: exact rational comparison of a window's rate against its cap.

SPEC "Rates and thresholds": caps are inclusive as the regulations word them ("at most 3
per 100"), so a violation is a value strictly above the cap; a warning is a value at or
above `warning_fraction` × cap (80 % by default); below the minimum sample (the rate's
denominator, 100 answered-by-person calls by default) the window is "insufficient" unless
the violation is already certain: a numerator above cap × minimum sample (in IT a fourth
silent call before 100 answered calls, "non più di 3 telefonate mute ogni 100 andate a buon
fine") is a violation whatever the denominator. Warnings still wait for the minimum sample.
Arithmetic is `Fraction` throughout: 3/100 is exactly 3/100, never 0.030000000000000002.
"""

from __future__ import annotations

import math
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
    """The level a rate reaches: below the minimum sample `violation` when it is certain
    (`certain_violation`), else `insufficient`; from the minimum sample on `violation`
    strictly above the cap, `warning` at or above warning_fraction × cap, else `ok`."""
    # Exact comparisons of integers, cross-multiplied by the terms' denominators (all
    # positive): no Fraction is built. `numerator / denominator > cap` was a Fraction
    # division and two products a window and a batch, 12 µs of which this keeps 3
    # (ints or Fractions alike: both have `numerator` and `denominator`).
    a, b = numerator.numerator, numerator.denominator  # numerator = a / b
    c, e = denominator.numerator, denominator.denominator  # denominator = c / e
    p, q = cap.numerator, cap.denominator
    if c < min_sample * e or c == 0:
        # certain_violation: a / b > p / q × min_sample
        return "violation" if a * q > p * min_sample * b else "insufficient"
    # a/b ÷ c/e = (a·e)/(b·c)
    if a * e * q > p * b * c:
        return "violation"
    r, t = warning_fraction.numerator, warning_fraction.denominator
    if a * e * q * t >= r * p * b * c:
        return "warning"
    return "ok"


@dataclass(frozen=True, slots=True)
class RateJudge:
    """`assess` for one rate rule over bucket counts, with the rule's terms prepared once.

    The rolling windows are judged after every call, so without an AMD estimate (integer
    terms, the common case) the comparisons are made on integers, cross-multiplied by the
    cap's, the warning level's and the certain violation's terms: exact like `assess`,
    without a fraction built per judgement (tests/unit/test_rules.py holds the two to the
    same answers). An AMD estimate takes `assess` itself."""

    metric: str
    cap: Fraction
    warning_fraction: Fraction
    min_sample: int
    _terms: tuple[int, int, int, int, int, int]

    @classmethod
    def of(
        cls, metric: str, cap: Fraction, warning_fraction: Fraction, min_sample: int
    ) -> RateJudge:
        warn, certain = warning_fraction * cap, cap * min_sample
        terms = (
            cap.numerator,
            cap.denominator,
            warn.numerator,
            warn.denominator,
            certain.numerator,
            certain.denominator,
        )
        return cls(metric, cap, warning_fraction, min_sample, terms)

    def level(self, counts: BucketCounts, amd_false_positive_ratio: Fraction) -> Level:
        metric = self.metric
        if amd_false_positive_ratio or metric not in ("silent", "abandoned"):
            numerator, denominator = rate_terms(metric, counts, amd_false_positive_ratio)
            return assess(numerator, denominator, self.cap, self.warning_fraction, self.min_sample)
        num = counts.silent if metric == "silent" else counts.abandoned
        den = counts.answered_by_person
        cap_n, cap_d, warn_n, warn_d, certain_n, certain_d = self._terms
        if den < self.min_sample or den == 0:
            return "violation" if num * certain_d > certain_n else "insufficient"
        if num * cap_d > cap_n * den:
            return "violation"
        if num * warn_d >= warn_n * den:
            return "warning"
        return "ok"


def certain_violation(numerator: Fraction, cap: Fraction, min_sample: int) -> bool:
    """Whether the numerator alone already breaks the cap over the minimum sample: more
    than cap × min_sample (3/100 × 100 = 3 silent calls) can never be brought back within
    the cap by the calls still missing from the sample. Exact: 4 > 3, 3 is not."""
    return numerator > cap * min_sample


_NOUNS = {
    "silent": ("silent calls", "answered-by-person calls"),
    "abandoned": ("abandoned calls", "answered-by-person calls"),
    "out_of_hours": ("out-of-hours calls", "attempts"),
}


def explain(
    level: Level,
    metric: str,
    numerator: Fraction,
    denominator: Fraction,
    cap: Fraction,
    warning_fraction: Fraction,
    min_sample: int,
) -> str:
    """Why a window has `level` (from `assess` on the same figures), in one sentence for
    the compliance view, e.g. "certain: 4 silent calls exceed 3 % of the 100-call minimum
    sample (at most 3), whatever the denominator". Percentages are shown rounded to two
    decimals; the verdict itself is exact."""
    events, base = _NOUNS.get(metric, (f"{metric} calls", "calls"))
    n, d, c = _number(numerator), _number(denominator), _percent(cap)
    sample = f"the {min_sample}-call minimum sample"
    if denominator < min_sample or denominator == 0:
        if level == "violation":
            return (
                f"certain: {n} {events} exceed {c} of {sample} (at most "
                f"{_number(cap * min_sample)}), whatever the denominator ({d} {base} so far)"
            )
        return f"insufficient: {d} {base}, below {sample}; {n} {events} do not exceed {c} of it"
    rate = f"{n} {events} of {d} {base} = {_percent(numerator / denominator)}"
    if level == "violation":
        return f"violation: {rate}, above the {c} cap"
    warn = _percent(warning_fraction * cap)
    if level == "warning":
        share = _percent(warning_fraction)
        return f"warning: {rate}, at or above the warning level {warn} ({share} of the {c} cap)"
    return f"ok: {rate}, below the warning level {warn}"


def _number(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.2f}".rstrip("0").rstrip(".")


def _percent(value: Fraction) -> str:
    return f"{_number(value * 100)} %"


def headroom(numerator: Fraction, denominator: Fraction, cap: Fraction, min_sample: int = 0) -> int:
    """How many more silent/abandoned calls the window can take before its level becomes
    `violation` (`assess`), assuming each added call is also an answered call (it adds 1 to
    both terms).

    From the minimum sample on: the largest integer k >= 0 with (n + k) / (d + k) <= cap;
    0 when already above. Below it (an "insufficient" window) the cap is not yet judged and
    the limit is the certain violation: k calls more while n + k <= cap × min_sample (in
    `it`, 1 silent call of 1 answered leaves 2 more: a 4th silent call is a violation
    whatever the denominator), or, if the added calls complete the sample first, the rate
    bound from there on. 0 for a window already in violation. With cap >= 1 the window can
    never breach and the answer is unbounded: reported as -1.
    """
    if cap >= 1:
        return -1
    # (n + k) <= cap (d + k)  <=>  k (1 - cap) <= cap·d - n
    slack = cap * denominator - numerator
    by_rate = -1 if slack < 0 else int(slack / (1 - cap))
    if denominator >= min_sample and denominator > 0:
        return max(by_rate, 0)
    by_sample = cap * min_sample - numerator
    if by_sample < 0:
        return 0  # a certain violation already
    certain = int(by_sample)  # floor: the numerator may be fractional (AMD estimate)
    if denominator + certain < min_sample:
        return certain
    # The calls that complete the sample are safe (n + k <= cap × min_sample before it);
    # after it the rate decides.
    return max(int(math.ceil(min_sample - denominator)) - 1, by_rate)


def effective_amd_ratio(campaign_ratio: Fraction, profile_ratio: Fraction) -> Fraction:
    """The AMD false-positive ratio a campaign's UK formula uses: the campaign's own
    (`PUT /v1/campaigns/{id}` top-level `amd_false_positive_ratio`) when set above 0, else
    the profile's parameter (its file's value or a per-campaign override of it)."""
    return campaign_ratio if campaign_ratio > 0 else profile_ratio
