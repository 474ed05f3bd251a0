"""Two detector workers in one consumer group give exactly the results of one (issue 7).

The second worker joins while the first is in the middle of live traffic, so partitions
move between them with their state (recovered from the change log by the worker taking
them over) and their committed offsets. What downstream ends with must be what the engine
gives the same CDRs in one pass: every minute bucket (last write wins, as the api folds
them), every campaign's totals, one alert per (rule, campaign, window) for the fixed
windows, and the same rolling episodes."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from tests.helpers import WaitTimeout, wait_until_async
from tests.integration.test_detector_sigkill import (
    ROLLING,
    LastWriteWins,
    _poll,
    _published_episodes,
    _rolling_episodes,
    _short,
    _totals,
    await_totals,
    counted,
    live_traffic,
    produce_live,
)
from tests.stack import OutputReader, ServiceProcess, expected_buckets
from tests.stack import service_env as stack_env

pytestmark = pytest.mark.integration


def worker(bootstrap: str, tmp_path: Path, name: str) -> ServiceProcess:
    """A detector worker with a data directory of its own (its RocksDB files)."""
    return ServiceProcess(
        ["detector"],
        stack_env(
            bootstrap,
            tmp_path / f"data-{name}",
            CDRWATCH_SESSION_TIMEOUT_SECONDS="6",
            CDRWATCH_LOG_LEVEL="INFO",
        ),
        tmp_path / f"detector-{name}.log",
    ).start()


async def test_two_workers_in_one_group_give_exactly_the_results_of_one(
    broker: str, tmp_path: Path
) -> None:
    records = live_traffic(8_000, seed=23)
    expected = expected_buckets(records)
    totals = _totals(expected)
    episodes = _rolling_episodes(records)
    reader = OutputReader(broker)
    reader.published = LastWriteWins()
    await reader.start()
    await produce_live(broker, records[:3000], chunk=1000, pause_s=0)
    # The rest over about 25 s: long enough for the second worker to join and take over
    # partitions while CDRs still arrive.
    feeding = asyncio.create_task(produce_live(broker, records[3000:], chunk=100, pause_s=0.5))
    procs = [worker(broker, tmp_path, "a")]
    try:
        await wait_until_async(
            lambda: _poll(reader, lambda p: counted(p) >= 1500),
            timeout=120,
            interval=0.1,
            message=f"the first worker made no progress:\n{procs[0].log_tail()}",
        )
        procs.append(worker(broker, tmp_path, "b"))  # joins mid-stream: a rebalance
        await wait_until_async(
            lambda: "batch_processed" in procs[1].log_path.read_text(),
            timeout=60,
            interval=0.2,
            message=f"the second worker processed nothing:\n{procs[1].log_tail()}",
        )
        assert not feeding.done(), "the traffic ended before the second worker took part"
        await feeding

        async def diagnosis() -> str:
            return (
                f"minute buckets (published, expected): {_short(reader.published, expected)}"
                f"\nworker a:\n{procs[0].log_tail()}\nworker b:\n{procs[1].log_tail()}"
            )

        await await_totals(reader, totals, diagnosis)
        with contextlib.suppress(WaitTimeout):
            await wait_until_async(
                lambda: _poll(
                    reader,
                    lambda p: _short(p, expected) == {} and _published_episodes(p) == episodes,
                ),
                timeout=20,
                interval=0.2,
            )
        published = reader.published
        assert isinstance(published, LastWriteWins)
        assert _short(published, expected) == {}
        assert set(published.minutes_lww) == set(expected)
        ids: dict[tuple[str, str, str], set[str]] = {}
        for alert in published.alert_messages:
            if not alert["rule"].endswith(ROLLING):
                key = (alert["rule"], alert["campaign_id"], alert["window"]["start"])
                ids.setdefault(key, set()).add(alert["id"])
        assert ids, "the traffic should raise alerts"
        assert not {k: v for k, v in ids.items() if len(v) > 1}
        assert episodes and _published_episodes(published) == episodes
    finally:
        feeding.cancel()
        for proc in procs:
            proc.stop()
        await reader.stop()
