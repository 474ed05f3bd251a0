"""The detector's two stages in two processes (`--stage cdrs` and `--stage callees`, as
`cdrwatch up` runs them) give exactly what one `all` worker gives: every minute bucket and
every lockout count, also when the per-callee worker is SIGKILLed mid-stream and comes
back (its histories recovered from the change log it shares with the `all` form)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import wait_until_async
from tests.integration.test_detector_pipeline import (
    _poll_check,
    await_exact_lockouts,
    produce,
    totals_by_campaign,
    traffic,
    wait_for_totals,
)
from tests.stack import OutputReader, ServiceProcess, expected_buckets
from tests.stack import service_env as stack_env

pytestmark = pytest.mark.integration


def stage_worker(bootstrap: str, tmp_path: Path, stage: str, name: str) -> ServiceProcess:
    return ServiceProcess(
        ["detector", "--stage", stage],
        stack_env(bootstrap, tmp_path / "data", CDRWATCH_LOG_LEVEL="INFO"),
        tmp_path / f"{name}.log",
    ).start()


async def test_the_stages_in_two_processes_give_the_results_of_one_worker(
    broker: str, tmp_path: Path
) -> None:
    campaigns = [f"stage-{i}" for i in range(4)]
    first = traffic(12_000, campaigns, seed=5, callees=2500)
    await produce(broker, first)
    reader = OutputReader(broker)
    await reader.start()
    cdrs = stage_worker(broker, tmp_path, "cdrs", "cdrs")
    callees = stage_worker(broker, tmp_path, "callees", "callees-1")
    try:
        # The per-callee worker is killed while calls still reach it.
        await wait_until_async(
            lambda: _poll_check(
                reader, lambda p: sum(c.attempts for c in p.cumulative.values()) >= 3000
            ),
            timeout=120,
            interval=0.05,
            message="the CDR stage counted fewer than 3,000 calls",
        )
        callees.kill9()
        second = traffic(4000, campaigns, seed=6, start=len(first), callees=2500)
        await produce(broker, second)
        callees = stage_worker(broker, tmp_path, "callees", "callees-2")
        records = first + second
        expected_minutes = expected_buckets(records)
        await wait_for_totals(reader, totals_by_campaign(expected_minutes), cdrs, timeout=150)

        await await_exact_lockouts(
            reader,
            records,
            timeout=90,
            diagnosis=lambda: f"cdrs:\n{cdrs.log_tail()}\ncallees:\n{callees.log_tail()}",
        )
        assert (await reader.poll()).minutes == expected_minutes
        # Each stage ran in its own process: the CDR worker never read the callee topic.
        assert "callee-calls" not in _assigned(cdrs.log_path.read_text())
        assert "callee-calls" in _assigned(callees.log_path.read_text())
    finally:
        cdrs.stop()
        callees.stop()
        await reader.stop()


def _assigned(log: str) -> str:
    """The topics a worker's log says it committed offsets of."""
    return " ".join(line for line in log.splitlines() if "offsets_committed" in line)
