"""`RateJudge` (integer comparisons, used call by call for the rolling windows) gives
exactly the answers of `assess` on fractions, at and around every boundary."""

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


def test_an_amd_estimate_takes_the_fraction_path() -> None:
    figures = counts(answered_by_person=100, abandoned=2, amd_machine=20)
    judge = RateJudge.of("abandoned", Fraction(3, 100), Fraction(4, 5), 100)
    level = judge.level(figures, Fraction(1, 10))
    assert level == "violation"  # (2 + 2) / (100 + 2) > 3 %
