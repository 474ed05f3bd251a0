"""`assess` (cross-multiplied integers) gives exactly the answers of its definition on
fractions, and `RateJudge` (used call by call for the rolling windows) those of
`assess`, at and around every boundary."""

from __future__ import annotations

from fractions import Fraction

import pytest

from services.detector.core.model import EMPTY, BucketCounts
from services.detector.core.rules import RateJudge, assess, rate_terms


def counts(**figures: int) -> BucketCounts:
    values = dict.fromkeys(EMPTY.as_dict(), 0) | figures
    return BucketCounts(**values)


@pytest.mark.parametrize(
    ("cap", "warning", "min_sample"),
    [
        (Fraction(3, 100), Fraction(4, 5), 100),  # it, us, uk early warnings
        (Fraction(4, 100), Fraction(4, 5), 100),  # it daily option
        (Fraction(1, 3), Fraction(1, 2), 7),
        (Fraction(0), Fraction(4, 5), 100),
    ],
    ids=["3pct", "4pct", "odd-terms", "zero-cap"],
)
@pytest.mark.parametrize("metric", ["silent", "abandoned"])
def test_integer_judgement_equals_the_fraction_one(
    cap: Fraction, warning: Fraction, min_sample: int, metric: str
) -> None:
    for den in (0, 1, 2, 50, 99, 100, 101, 125, 126, 200, 333):
        for num in range(0, min(den, 12) + 6):
            figures = counts(answered_by_person=den, **{metric: num})
            expected_terms = rate_terms(metric, figures, Fraction(0))
            expected = assess(*expected_terms, cap, warning, min_sample)
            got = RateJudge.of(metric, cap, warning, min_sample).level(figures, Fraction(0))
            assert got == expected, (metric, num, den)


def by_definition(
    numerator: Fraction, denominator: Fraction, cap: Fraction, warning: Fraction, min_sample: int
) -> str:
    """SPEC "Alerts": violation strictly above the cap, warning at or above warning × cap,
    from the minimum sample on; below it a violation only when certain (more than
    cap × min_sample)."""
    if denominator < min_sample or denominator == 0:
        return "violation" if numerator > cap * min_sample else "insufficient"
    value = numerator / denominator
    if value > cap:
        return "violation"
    return "warning" if value >= warning * cap else "ok"


@pytest.mark.parametrize(
    ("cap", "warning", "min_sample"),
    [
        (Fraction(3, 100), Fraction(4, 5), 100),
        (Fraction(1, 3), Fraction(1, 2), 7),
        (Fraction(0), Fraction(4, 5), 100),
        (Fraction(3, 100), Fraction(4, 5), 0),
    ],
    ids=["3pct", "odd-terms", "zero-cap", "no-minimum"],
)
@pytest.mark.parametrize(
    "amd_ratio", [Fraction(0), Fraction(1, 10), Fraction(1, 3)], ids=["no-amd", "0.1", "1/3"]
)
def test_assess_equals_its_definition_on_fractions(
    cap: Fraction, warning: Fraction, min_sample: int, amd_ratio: Fraction
) -> None:
    """Integer and fractional terms (an AMD estimate adds ratio × machine calls to both)
    at and around every boundary."""
    for den in (0, 1, 2, 6, 7, 8, 50, 99, 100, 101, 125, 126, 200, 333):
        for num in range(0, min(den, 12) + 6):
            for machine in (0, 1, 7, 30):
                figures = counts(answered_by_person=den, abandoned=num, amd_machine=machine)
                terms = rate_terms("abandoned", figures, amd_ratio)
                expected = by_definition(*terms, cap, warning, min_sample)
                assert assess(*terms, cap, warning, min_sample) == expected, (num, den, machine)


def test_an_amd_estimate_takes_the_fraction_path() -> None:
    figures = counts(answered_by_person=100, abandoned=2, amd_machine=20)
    judge = RateJudge.of("abandoned", Fraction(3, 100), Fraction(4, 5), 100)
    level = judge.level(figures, Fraction(1, 10))
    assert level == "violation"  # (2 + 2) / (100 + 2) > 3 %
