"""The benchmarks' generated traffic: `--calling-hours` keeps every call within the `it`
profile's calling hours for its callee (the flat rows compare quarters holding the same mix
of calls), as the detector's own calendar judges them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pytest

from services.detector.core.calendar import is_within_calling_hours
from services.detector.core.profiles import load_profile
from tests.helpers import bench_module

ROME = ZoneInfo("Europe/Rome")


def _calls(start: datetime, *, calling_hours: bool) -> list[dict[str, object]]:
    common = bench_module("_common")
    cdrs = common.dialer_traffic(
        4000,
        seed=3,
        campaigns=20,
        numbers=2000,
        start=start,
        span=timedelta(days=7),
        id_prefix="t",
        calling_hours=calling_hours,
    )
    # As the ingest publishes them: the callee's zones come from the number.
    records = common.normalized_records(cdrs, b"k" * 32, lambda: start + timedelta(days=8))
    return [orjson.loads(value) for _key, value in records]


@pytest.mark.parametrize(
    "start",
    [
        datetime(2026, 11, 26, 15, 0, tzinfo=ROME),  # a Thursday: a weekend in the span
        datetime(2026, 12, 3, 15, 0, tzinfo=ROME),  # 7 and 8 December: pre-holiday, holiday
        datetime(2026, 10, 27, 15, 0, tzinfo=ROME),  # New York still on summer time
    ],
    ids=["weekend", "immacolata", "dst-apart"],
)
def test_calls_within_calling_hours_are_all_within_the_it_hours(start: datetime) -> None:
    it = load_profile("it")
    calls = _calls(start, calling_hours=True)
    instants = [datetime.fromisoformat(str(c["originated_at"])) for c in calls]
    outside = [
        c["call_id"]
        for c, at in zip(calls, instants, strict=True)
        if not is_within_calling_hours(at, c["callee_zones"], it)  # type: ignore[arg-type]
    ]
    assert outside == []
    # Spread over the whole week, not bunched at its start.
    assert instants[-1] - instants[0] > timedelta(days=5)
    days = {at.astimezone(ROME).date() for at in instants}
    assert len(days) >= 3  # the immacolata week: 3, 4 and 9 December


def test_round_the_clock_traffic_has_calls_out_of_hours() -> None:
    # The contrast that makes the test above mean something.
    it = load_profile("it")
    calls = _calls(datetime(2026, 11, 26, 15, 0, tzinfo=ROME), calling_hours=False)
    outside = sum(
        not is_within_calling_hours(
            datetime.fromisoformat(str(c["originated_at"])).astimezone(UTC),
            c["callee_zones"],  # type: ignore[arg-type]
            it,
        )
        for c in calls
    )
    assert outside > len(calls) // 3
