"""The ingest's collector settings (services/common/gc_tuning.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from services.common.gc_tuning import tune_for_throughput


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_start_up_objects_are_frozen_and_the_young_generation_grows() -> None:
    _, middle, old = gc.get_threshold()

    tune_for_throughput(young=12_345)

    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (12_345, middle, old)


@pytest.mark.usefixtures("restored_gc")
def test_cycles_are_still_collected() -> None:
    tune_for_throughput()

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    del a, b
    assert gc.collect() >= 2
