"""SIGKILL the detector again and again under live load on a real broker: every minute bucket
ends exact, nothing lost, nothing double counted, one alert per (rule, campaign, window).

Live load means calls arrive in event-time order, as a dialer pushes them: once the
stream has moved past a minute, nothing touches that bucket again, so a figure lost with
a kill is never repaired by a later call (the earlier kill test spreads calls over four
hours in random order, which hides that). The figures are folded last-write-wins, the way
the api stores them (CONTRACT decision 5), never max-merged.

Rolling early-warning episodes (15m/1h/24h) are judged call by call in each campaign's
partition order (core.engine), so a re-read after a kill finds the episodes the killed
worker published: their ids and final states must equal those of the engine fed the same
CDRs in one go."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from schemas import topics
from services.detector.core.model import EMPTY, BucketCounts
from services.detector.core.windows import minute_of
from tests.helpers import WaitTimeout, wait_until_async
from tests.stack import OutputReader, Published, ServiceProcess, expected_buckets, normalized_cdr
from tests.stack import service_env as stack_env

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # Monday 10:00 in Rome
KINDS = ["connected"] * 84 + ["silent"] * 5 + ["late"] * 3 + ["machine"] * 5 + ["unanswered"] * 3
CAMPAIGNS = [f"sk-{i}" for i in range(6)]
KILLS = 4
PARTITIONS = 4
ROLLING = ("-15m", "-1h", "-24h")


class LastWriteWins(Published):
    """Stats folded as the api folds them: the last message of a window wins."""

    def __init__(self) -> None:
        super().__init__()
        self.minutes_lww: dict[tuple[str, int], BucketCounts] = {}

    def apply_record(self, topic: str, body: Any, headers: list[tuple[str, bytes]]) -> None:
        super().apply_record(topic, body, headers)
        if topic == topics.STATS and dict(headers).get(topics.HEADER_WINDOW) == b"minute":
            counts = BucketCounts(*(body[name] for name in BucketCounts._fields))
            key = (body["campaign_id"], minute_of(datetime.fromisoformat(body["from"])))
            self.minutes_lww[key] = counts


def live_traffic(n: int, seed: int) -> list[dict[str, Any]]:
    """`n` calls 0.3 s apart over 6 campaigns (about 33 per campaign-minute), plus dialer
    retries of earlier calls sprinkled in (duplicates: the first copy wins)."""
    rng = random.Random(seed)
    records = [
        normalized_cdr(
            f"sk-call-{i}",
            rng.choice(CAMPAIGNS),
            rng.choice(KINDS),
            T0 + timedelta(milliseconds=300 * i),
        )
        for i in range(n)
    ]
    out: list[dict[str, Any]] = []
    for i, record in enumerate(records):
        out.append(record)
        if i > 100 and i % 97 == 0:
            out.append(dict(records[rng.randrange(i - 100, i)]))
    return out


async def produce_live(
    bootstrap: str, records: list[dict[str, Any]], chunk: int, pause_s: float
) -> None:
    """Produce in chunks with pauses, like ingest under sustained load."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for start in range(0, len(records), chunk):
            for record in records[start : start + chunk]:
                await producer.send(
                    topics.CDRS, key=record["campaign_id"].encode(), value=orjson.dumps(record)
                )
            await producer.flush()
            await asyncio.sleep(pause_s)
    finally:
        await producer.stop()


def detector(bootstrap: str, tmp_path: Path, n: int) -> ServiceProcess:
    return ServiceProcess(
        ["detector"],
        stack_env(
            bootstrap,
            tmp_path / "data",
            CDRWATCH_SESSION_TIMEOUT_SECONDS="6",
            CDRWATCH_SWEEP_INTERVAL_SECONDS="2",
            CDRWATCH_LOG_LEVEL="INFO",  # assignments and recoveries, for a failure's message
        ),
        tmp_path / f"detector-{n}.log",
    ).start()


def counted(published: Published) -> int:
    return sum(c.attempts for c in published.cumulative.values())


async def test_repeated_sigkill_under_live_load_ends_exact(broker: str, tmp_path: Path) -> None:
    records = live_traffic(12_000, seed=11)
    expected = expected_buckets(records)
    unique = sum(c.attempts for c in expected.values())
    reader = OutputReader(broker)
    reader.published = LastWriteWins()
    await reader.start()
    rng = random.Random(5)
    # Half the traffic is waiting when the detector starts, the rest arrives meanwhile.
    await produce_live(broker, records[: len(records) // 2], chunk=2000, pause_s=0)
    feeding = asyncio.create_task(
        produce_live(broker, records[len(records) // 2 :], chunk=300, pause_s=0.5)
    )
    procs: list[ServiceProcess] = []
    try:
        kills_at = []
        for k in range(KILLS):
            proc = detector(broker, tmp_path, k)
            procs.append(proc)
            before = counted(reader.published)
            # Kill once this worker has made progress: in the middle of its batches.
            await wait_until_async(
                lambda before=before: _poll(reader, lambda p: counted(p) >= before + 1200),
                timeout=120,
                interval=0.05,
                message=f"detector {k} made no progress:\n{proc.log_tail()}",
            )
            await asyncio.sleep(rng.uniform(0.0, 0.8))
            proc.kill9()
            kills_at.append(counted(reader.published))
        assert kills_at[-1] < unique, "killed too late to prove anything"
        await feeding
        proc = detector(broker, tmp_path, KILLS)
        procs.append(proc)
        totals = _totals(expected)

        async def diagnosis() -> str:
            return (
                f"after kills at {kills_at}; "
                f"minute buckets (published, expected): {_short(reader.published, expected)}; "
                f"state in the change log: {await _change_log_state(broker)}; "
                f"CDR topic (committed, end) per partition: {await _cdr_offsets(broker)}; "
                f"holes met by every detector:\n{_hole_lines(procs)}\n"
                f"last detector's log:\n{_log_without_noise(proc.log_path)}"
            )

        await await_totals(reader, totals, diagnosis)
        # Let the last batch's minute stats arrive (sent with its cumulative); the assertion
        # below says what is missing if they never do.
        with contextlib.suppress(WaitTimeout):
            await wait_until_async(
                lambda: _poll(reader, lambda p: _short(p, expected) == {}),
                timeout=20,
                interval=0.2,
            )
        published = reader.published
        assert isinstance(published, LastWriteWins)
        short = _short(published, expected)
        assert not short, f"minute buckets (published, expected) after kills at {kills_at}: {short}"
        assert set(published.minutes_lww) == set(expected)
        # One alert per (rule, campaign, window) of the regulatory and per-call rules: a
        # replay re-publishes the same id. Rolling episodes: the ones of one clean pass.
        ids: dict[tuple[str, str, str], set[str]] = {}
        for alert in published.alert_messages:
            if alert["rule"].endswith(ROLLING):
                continue
            key = (alert["rule"], alert["campaign_id"], alert["window"]["start"])
            ids.setdefault(key, set()).add(alert["id"])
        assert ids, "the traffic should raise alerts"
        assert not {k: v for k, v in ids.items() if len(v) > 1}
        episodes = _rolling_episodes(records)
        assert episodes, "the traffic should open rolling episodes"
        with contextlib.suppress(WaitTimeout):
            await wait_until_async(
                lambda: _poll(reader, lambda p: _published_episodes(p) == episodes),
                timeout=20,
                interval=0.2,
            )
        got = _published_episodes(reader.published)
        assert got == episodes, (
            f"rolling episodes after kills at {kills_at}: only published "
            f"{ {k: v for k, v in got.items() if episodes.get(k) != v} }, only expected "
            f"{ {k: v for k, v in episodes.items() if got.get(k) != v} }"
        )

        # The last batch's alerts travel on their own topic: wait for them (bounded).
        def cumulative_alerts(p: Published) -> dict[str, tuple[int, int]]:
            return {
                a["campaign_id"]: (a["numerator"], a["denominator"])
                for a in p.alerts.values()
                if a["rule"] == "it-silent-rate-cumulative"
            }

        final = {
            cid: (c.silent, c.answered_by_person)
            for cid, c in ((cid, BucketCounts.from_list(t)) for cid, t in totals.items())
        }
        try:
            await wait_until_async(
                lambda: _poll(reader, lambda p: cumulative_alerts(p) == final),
                timeout=20,
                interval=0.2,
            )
        except Exception:
            raise AssertionError(
                f"cumulative alerts {cumulative_alerts(reader.published)} != {final}"
            ) from None
    finally:
        feeding.cancel()
        for proc in procs:
            proc.stop()
        await reader.stop()


async def await_totals(
    reader: OutputReader, totals: dict[str, list[int]], diagnosis: Callable[[], Awaitable[str]]
) -> None:
    """Wait (120 s) until every campaign's published cumulative figures are `totals`; fail
    with what was published and `diagnosis()` otherwise."""

    def reached(published: Published) -> bool:
        return _published_totals(published) == totals

    try:
        await wait_until_async(lambda: _poll(reader, reached), timeout=120, interval=0.2)
    except Exception:
        got = _published_totals(reader.published)
        raise AssertionError(f"totals {got} never reached {totals}; {await diagnosis()}") from None


def _published_totals(published: Published) -> dict[str, list[int]]:
    return {cid: c.to_list() for cid, c in published.cumulative.items()}


def _rolling_episodes(records: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """Rolling episodes (id -> state, severity) of the engine fed `records` in order, as
    one worker without a kill reads them (default tenant and profile, as the detector)."""
    from schemas import NormalizedCdrV1
    from services.detector.core.engine import CampaignConfig, Engine, Event
    from services.detector.core.profiles import load_profile
    from services.detector.wire import to_call_record
    from tests.unit.test_engine import DictState

    config = CampaignConfig(load_profile("it"))
    engine = Engine(DictState(), lambda _c: config, lateness=timedelta(days=7), clock=lambda: T0)
    calls = [to_call_record(NormalizedCdrV1.model_validate(r)) for r in records]
    out = engine.process([Event(0, i, call) for i, call in enumerate(calls)])
    return {a["id"]: (a["state"], a["severity"]) for a in out.alerts if a["rule"].endswith(ROLLING)}


def _published_episodes(published: Published) -> dict[str, tuple[str, str]]:
    return {
        a["id"]: (a["state"], a["severity"])
        for a in published.alerts.values()
        if a["rule"].endswith(ROLLING)
    }


def _short(
    published: Published, expected: dict[tuple[str, int], BucketCounts]
) -> dict[tuple[str, int], tuple[int, int]]:
    assert isinstance(published, LastWriteWins)
    return {
        k: (published.minutes_lww.get(k, EMPTY).attempts, v.attempts)
        for k, v in expected.items()
        if published.minutes_lww.get(k) != v
    }


async def _change_log_state(bootstrap: str) -> dict[str, Any]:
    """Diagnosis of a failure: the detector's state table rebuilt from its change log, per
    campaign: the campaign record's attempts and watermark, the sum of its buckets'
    attempts, its seen-entries."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        "cdrwatch-detector-state-changelog",
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        enable_auto_commit=False,
    )
    await consumer.start()
    table: dict[str, Any] = {}
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=1000, max_records=100_000)
            if not batches:
                break
            for messages in batches.values():
                for m in messages:
                    key = orjson.loads(m.key)
                    if m.value is None:
                        table.pop(key, None)
                    else:
                        table[key] = orjson.loads(m.value)
    finally:
        await consumer.stop()
    out: dict[str, Any] = {}
    for key, value in table.items():
        kind, _, rest = key.partition("\x1f")
        if kind == "c":
            out.setdefault(rest, {})["record"] = (value["totals"][0], value["watermark"])
        elif kind == "b":
            cid = rest.rpartition("\x1f")[0]
            entry = out.setdefault(cid, {})
            entry["buckets"] = entry.get("buckets", 0) + value[1]
        elif kind == "s":
            entry = out.setdefault(value[3], {})
            entry["seen"] = entry.get("seen", 0) + 1
        elif kind == "S":  # a chunk: the seen-entries of one batch in one partition
            for _call, _offset, _minute, cid in value:
                entry = out.setdefault(cid, {})
                entry["seen"] = entry.get("seen", 0) + 1
    return out


async def _cdr_offsets(bootstrap: str) -> dict[int, tuple[int | None, int]]:
    """Diagnosis of a failure: the detectors' committed offset and the end of each CDR
    partition (a tail never re-read shows as committed == end)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id="cdrwatch-detector", enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topics.CDRS, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: (await consumer.committed(tp), ends[tp]) for tp in tps}
    finally:
        await consumer.stop()


def _hole_lines(procs: list[ServiceProcess]) -> str:
    """The ContiguousReads warnings of each detector (killed ones included) and any CDR
    partition that skipped ahead at the engine: a lost range of offsets shows there."""
    lines = []
    for n, proc in enumerate(procs):
        path = proc.log_path
        text = path.read_text(errors="replace") if path.exists() else ""
        lines += [
            f"detector {n}: {line}"
            for line in text.splitlines()
            if "offset_hole" in line or "applied_out_of_order" in line
        ]
    return "\n".join(lines)[-6000:]


def _log_without_noise(path: Path) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join(line for line in lines if "producer buffer full" not in line)[-8000:]


def _totals(expected: dict[tuple[str, int], BucketCounts]) -> dict[str, list[int]]:
    totals: dict[str, BucketCounts] = {}
    for (cid, _minute), counts in expected.items():
        totals[cid] = totals.get(cid, EMPTY).merge(counts)
    return {cid: c.to_list() for cid, c in totals.items()}


async def _poll(reader: OutputReader, done: Any) -> bool:
    return bool(done(await reader.poll()))
