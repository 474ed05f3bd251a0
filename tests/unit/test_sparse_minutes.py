"""Sums over a campaign's buckets read only the minutes that hold one
(`windows.SparseLookup`, `windows.MinuteIndex`): the same sums, rolling steps and ends as
reading every minute, at the cost of the buckets instead of the minutes in between."""

from __future__ import annotations

import random

import pytest

from services.detector.core.model import EMPTY, BucketCounts
from services.detector.core.windows import (
    BucketLookup,
    MinuteIndex,
    RollingSum,
    SparseLookup,
    minutes_in,
    sum_buckets,
)

START = 29_000_000  # a minute in 2025


def _buckets(rng: random.Random, n: int, span: int) -> dict[int, BucketCounts]:
    buckets: dict[int, BucketCounts] = {}
    for _ in range(n):
        minute = START + rng.randrange(span)
        buckets[minute] = BucketCounts.from_list(
            [rng.randrange(1, 4), *(rng.randrange(3) for _ in range(7))]
        )
    return buckets


def _lookups(buckets: dict[int, BucketCounts]) -> tuple[BucketLookup, SparseLookup, list[int]]:
    """A dense lookup, a sparse one over an index of the buckets, and the minutes asked."""
    index = MinuteIndex()
    for minute in buckets:  # in no particular order
        index.add("c", minute)
    asked: list[int] = []

    def counts(minute: int) -> BucketCounts:
        asked.append(minute)
        return buckets.get(minute, EMPTY)

    def dense(minute: int) -> BucketCounts:
        return buckets.get(minute, EMPTY)

    return dense, SparseLookup(counts, lambda a, b: index.between("c", a, b)), asked


def test_the_index_keeps_each_campaign_s_minutes_ascending_once() -> None:
    index = MinuteIndex()
    for minute in (5, 9, 7, 9, 1, 12, 7):
        index.add("a", minute)
    index.add("b", 3)
    assert index.between("a", 0, 100) == [1, 5, 7, 9, 12]
    assert index.between("a", 5, 12) == [5, 7, 9]  # [first, last_exclusive)
    assert index.between("a", 13, 20) == [] and index.between("a", 9, 9) == []
    assert index.between("b", 0, 100) == [3] and index.between("z", 0, 100) == []
    index.discard("a", 7)
    index.discard("a", 8)  # not there: nothing happens
    assert index.between("a", 0, 100) == [1, 5, 9, 12]
    index.discard("b", 3)
    assert index.between("b", 0, 100) == []


@pytest.mark.parametrize("seed", range(8))
def test_sums_over_the_index_are_the_minute_by_minute_sums(seed: int) -> None:
    rng = random.Random(seed)
    buckets = _buckets(rng, rng.randrange(1, 60), 5000)
    dense, sparse, asked = _lookups(buckets)
    for _ in range(50):
        first = START - 10 + rng.randrange(5020)
        last = first + rng.randrange(3000)
        assert sum_buckets(sparse, first, last) == sum_buckets(dense, first, last)
    assert set(asked) <= set(buckets)  # never an empty minute
    assert list(minutes_in(dense, 3, 6)) == [3, 4, 5]


@pytest.mark.parametrize("length", [15, 60, 1440])
@pytest.mark.parametrize("seed", range(6))
def test_a_rolling_sum_steps_and_moves_over_the_index_as_over_every_minute(
    seed: int, length: int
) -> None:
    rng = random.Random(seed)
    buckets = _buckets(rng, 200, 20_000)
    dense, sparse, asked = _lookups(buckets)
    end = START + rng.randrange(100)
    a = RollingSum(length, end, dense)
    b = RollingSum(length, end, sparse)
    while end < START + 21_000:
        target = end + rng.choice((1, 5, length // 2, length, 3 * length))
        assert list(a.step_to(target, dense)) == list(b.step_to(target, sparse))
        assert (a.end, a.counts) == (b.end, b.counts)
        end = target + rng.randrange(length)
        a.move_end(end, dense)
        b.move_end(end, sparse)
        assert (a.end, a.counts) == (b.end, b.counts)
    assert set(asked) <= set(buckets)
