"""The detector as it runs in production: a faust worker process on a real Kafka-protocol
broker (embedded Tansu), fed normalised CDRs, read back from its output topics."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from schemas import topics
from services.detector.core.model import EMPTY
from tests.helpers import WaitTimeout, wait_until_async
from tests.stack import (
    OutputReader,
    ServiceProcess,
    expected_buckets,
    expected_lockouts,
    normalized_cdr,
    service_env,
)

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)  # Monday 10:30 in Rome
KINDS = ["connected"] * 82 + ["silent"] * 6 + ["late"] * 3 + ["machine"] * 5 + ["unanswered"] * 4


def traffic(
    n: int, campaigns: list[str], seed: int, start: int = 0, callees: int | None = None
) -> list[dict[str, Any]]:
    """Calls over four hours; with `callees`, numbers drawn from a pool of that size, so
    re-calls after silent calls reach the per-callee lockout rule."""
    rng = random.Random(seed)
    return [
        normalized_cdr(
            f"call-{start + i}",
            rng.choice(campaigns),
            rng.choice(KINDS),
            T0 + timedelta(seconds=rng.randint(0, 4 * 3600)),
            callee=None if callees is None else rng.randrange(callees),
        )
        for i in range(n)
    ]


async def produce(bootstrap: str, records: list[dict[str, Any]], raw: list[bytes] = ()) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for record in records:
            await producer.send(
                topics.CDRS, key=record["campaign_id"].encode(), value=orjson.dumps(record)
            )
        for value in raw:
            await producer.send(topics.CDRS, key=b"garbage", value=value)
        await producer.flush()
    finally:
        await producer.stop()


def detector(bootstrap: str, tmp_path: Path, name: str = "detector") -> ServiceProcess:
    return ServiceProcess(
        ["detector"],
        # A sweep every second exercises expiry on the real faust table (nothing in this
        # traffic is old enough to expire, so counts must be untouched).
        service_env(bootstrap, tmp_path / "data", CDRWATCH_SWEEP_INTERVAL_SECONDS="1"),
        tmp_path / f"{name}.log",
    ).start()


async def wait_for_totals(
    reader: OutputReader, expected: dict[str, list[int]], proc: ServiceProcess, timeout: float
) -> None:
    def done(published: Any) -> bool:
        return all(
            cid in published.cumulative and published.cumulative[cid].to_list() == totals
            for cid, totals in expected.items()
        )

    try:
        await wait_until_async(lambda: _poll_check(reader, done), timeout=timeout, interval=0.1)
    except Exception as exc:
        got = {cid: c.to_list() for cid, c in reader.published.cumulative.items()}
        raise AssertionError(
            f"detector totals {got} never reached {expected}: {exc}\n{proc.log_tail()}"
        ) from None


async def _poll_check(reader: OutputReader, done: Any) -> bool:
    return done(await reader.poll())


async def await_exact_lockouts(
    reader: OutputReader,
    records: list[dict[str, Any]],
    timeout: float,
    diagnosis: Callable[[], str] = lambda: "",
) -> None:
    """Wait until every `it-silent-lockout` alert counts exactly what the pure core finds
    in `records` (one alert per campaign and Rome day); fail naming the difference."""
    lockouts = expected_lockouts(records)
    assert lockouts, "the traffic should re-call numbers within their lockout"
    expected = {
        (cid, rule, datetime.combine(day, time(0), ZoneInfo("Europe/Rome"))): n
        for (cid, rule, day), n in lockouts.items()
    }

    def lockout_counts() -> dict[tuple[str, str, datetime], int]:
        return {
            (a["campaign_id"], a["rule"], datetime.fromisoformat(a["window"]["start"])): a[
                "numerator"
            ]
            for a in reader.published.alerts.values()
            if a["rule"] == "it-silent-lockout"
        }

    try:
        await wait_until_async(
            lambda: _poll_check(reader, lambda _p: lockout_counts() == expected),
            timeout=timeout,
            interval=0.2,
        )
    except WaitTimeout:
        raise AssertionError(
            f"lockout counts {lockout_counts()} != {expected}\n{diagnosis()}"
        ) from None


def totals_by_campaign(buckets: dict[tuple[str, int], Any]) -> dict[str, list[int]]:
    totals: dict[str, Any] = {}
    for (cid, _minute), counts in buckets.items():
        totals[cid] = totals.get(cid, EMPTY).merge(counts)
    return {cid: c.to_list() for cid, c in totals.items()}


async def test_counts_duplicates_alerts_and_dead_letters_on_a_real_broker(
    broker: str, tmp_path: Path
) -> None:
    records = traffic(3000, ["camp-a", "camp-b", "camp-c"], seed=1)
    duplicates = [dict(r, accepted_at=r["accepted_at"]) for r in records[100:150]]
    await produce(broker, records + duplicates, raw=[b"not json", b'{"call_id": 1}'])
    expected = expected_buckets(records + duplicates)
    reader = OutputReader(broker)
    await reader.start()
    proc = detector(broker, tmp_path)
    try:
        await wait_for_totals(reader, totals_by_campaign(expected), proc, timeout=90)

        def alerts_final(published: Any) -> bool:
            """An alert's latest figures may follow the stats by up to about two seconds
            (services/detector/pacing.py: at most one figures update a second)."""
            cumulative = [
                a for a in published.alerts.values() if a["rule"] == "it-silent-rate-cumulative"
            ]
            return len(cumulative) == 3 and all(
                a["numerator"] == published.cumulative[a["campaign_id"]].silent for a in cumulative
            )

        with contextlib.suppress(WaitTimeout):  # the assertions below say what is missing
            await wait_until_async(
                lambda: _poll_check(reader, alerts_final), timeout=10, interval=0.2
            )
        published = await reader.poll()
        assert published.minutes == expected
        assert {d["reason"] for d in published.dead_letters} == {"unreadable"}
        assert len(published.dead_letters) == 2
        cumulative_alerts = [
            a for a in published.alerts.values() if a["rule"] == "it-silent-rate-cumulative"
        ]
        assert {a["campaign_id"] for a in cumulative_alerts} == {"camp-a", "camp-b", "camp-c"}
        for alert in cumulative_alerts:
            totals = published.cumulative[alert["campaign_id"]]
            assert alert["numerator"] == totals.silent
            assert alert["denominator"] == totals.answered_by_person
            assert alert["severity"] == "violation" and alert["state"] == "firing"
            assert 0 < len(alert["evidence"]["call_ids"]) <= 20
    finally:
        proc.stop()
        await reader.stop()


async def test_kill_9_mid_stream_and_restart_ends_exact_without_duplicate_alerts(
    broker: str, tmp_path: Path
) -> None:
    campaigns = [f"kill-{i}" for i in range(6)]
    first = traffic(20_000, campaigns, seed=2, callees=4000)
    await produce(broker, first)
    reader = OutputReader(broker)
    await reader.start()
    proc = detector(broker, tmp_path, "detector-1")
    try:
        # Kill while the worker is in the middle of the stream, not before or after it.
        await wait_until_async(
            lambda: _poll_check(
                reader, lambda p: sum(c.attempts for c in p.cumulative.values()) >= 3000
            ),
            timeout=90,
            interval=0.05,
        )
        proc.kill9()
        processed_at_kill = sum(c.attempts for c in reader.published.cumulative.values())
        assert processed_at_kill < len(first), "killed too late to prove anything"

        second = traffic(5000, campaigns, seed=3, start=len(first), callees=4000)
        replayed = first[:500]  # a dialer retry of records already counted
        await produce(broker, second + replayed)
        expected = expected_buckets(first + second + replayed)
        proc = detector(broker, tmp_path, "detector-2")
        await wait_for_totals(reader, totals_by_campaign(expected), proc, timeout=150)

        # The last batch's alerts travel on their own topic, after its stats: wait for
        # them (bounded); the assertions below say what is missing if they never come.
        def alerts_caught_up(p: Any) -> bool:
            return all(
                (a["numerator"], a["denominator"])
                == (
                    p.cumulative[a["campaign_id"]].silent,
                    p.cumulative[a["campaign_id"]].answered_by_person,
                )
                for a in p.alerts.values()
                if a["rule"] == "it-silent-rate-cumulative"
            )

        with contextlib.suppress(WaitTimeout):
            await wait_until_async(
                lambda: _poll_check(reader, alerts_caught_up), timeout=20, interval=0.2
            )
        published = await reader.poll()
        assert published.minutes == expected
        by_campaign: dict[str, set[str]] = {}
        for alert in published.alert_messages:
            if alert["rule"] == "it-silent-rate-cumulative":
                by_campaign.setdefault(alert["campaign_id"], set()).add(alert["id"])
        assert by_campaign and all(len(ids) == 1 for ids in by_campaign.values())
        for alert in published.alerts.values():
            if alert["rule"] == "it-silent-rate-cumulative":
                totals = published.cumulative[alert["campaign_id"]]
                assert (alert["numerator"], alert["denominator"]) == (
                    totals.silent,
                    totals.answered_by_person,
                )
        # The per-callee stage survived the kill too: every lockout alert ends at exactly
        # the count computed from the whole set of calls.
        await await_exact_lockouts(reader, first + second + replayed, timeout=60)
    finally:
        proc.stop()
        await reader.stop()


async def test_a_record_that_overflows_is_a_dead_letter_and_its_batch_counts(
    broker: str, tmp_path: Path
) -> None:
    """Issue 6 #2: one record with originated_at 0001-01-01 among good ones crashed the
    batch (OverflowError in core/windows.py) and faust restarted the agent: the good ones
    never counted. Now it goes to the DLQ (stage `cdr`) and its neighbours count."""
    records = traffic(400, ["camp-x"], seed=7)
    for r in records:
        r["tenant_id"] = "t1"
    poison = [
        orjson.dumps(
            {**records[0], "call_id": "poison-1", "originated_at": "0001-01-01T00:00:00Z"}
        ),
        orjson.dumps(
            {**records[1], "call_id": "poison-2", "originated_at": "0001-01-01T00:30:00+01:00"}
        ),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all", linger_ms=5)
    await producer.start()
    try:
        for i, record in enumerate(records):
            if i in (150, 250):
                await producer.send(topics.CDRS, key=b"camp-x", value=poison[i == 250])
            await producer.send(topics.CDRS, key=b"camp-x", value=orjson.dumps(record))
        await producer.flush()
    finally:
        await producer.stop()
    expected = expected_buckets(records)
    reader = OutputReader(broker)
    await reader.start()
    proc = detector(broker, tmp_path)
    try:
        await wait_for_totals(reader, totals_by_campaign(expected), proc, timeout=90)

        def alerts_final(published: Any) -> bool:
            """An alert's latest figures may follow the stats by up to about two seconds
            (services/detector/pacing.py: at most one figures update a second)."""
            cumulative = [
                a for a in published.alerts.values() if a["rule"] == "it-silent-rate-cumulative"
            ]
            return len(cumulative) == 3 and all(
                a["numerator"] == published.cumulative[a["campaign_id"]].silent for a in cumulative
            )

        with contextlib.suppress(WaitTimeout):  # the assertions below say what is missing
            await wait_until_async(
                lambda: _poll_check(reader, alerts_final), timeout=10, interval=0.2
            )
        published = await reader.poll()
        assert published.minutes == expected
        assert sorted(d["record"]["call_id"] for d in published.dead_letters) == [
            "poison-1",
            "poison-2",
        ]
        assert {(d["stage"], d["reason"]) for d in published.dead_letters} <= {
            ("cdr", "unprocessable"),
            ("cdr", "unreadable"),
        }
        assert {a["tenant_id"] for a in published.alerts.values()} == {"t1"}
    finally:
        proc.stop()
        await reader.stop()
