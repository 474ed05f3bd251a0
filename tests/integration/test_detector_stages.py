"""The detector's two stages in two processes (`--stage cdrs` and `--stage callees`, as
`cdrwatch up` runs them) give exactly what one `all` worker gives: every minute bucket and
every lockout count, also when the per-callee worker is SIGKILLed mid-stream and comes
back (its histories recovered from the change log it shares with the `all` form)."""

from __future__ import annotations

import gc
import logging
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.common.kafka import confirm_log_ends
from services.common.settings import DetectorSettings
from services.detector import stage_guard
from services.detector.app import Detector, refuse_a_second_callee_stage
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


def stage_worker(
    bootstrap: str, tmp_path: Path, stage: str, name: str, **env: str
) -> ServiceProcess:
    return ServiceProcess(
        ["detector", "--stage", stage],
        stack_env(bootstrap, tmp_path / "data", CDRWATCH_LOG_LEVEL="INFO", **env),
        tmp_path / f"{name}.log",
    ).start()


async def test_the_stages_in_two_processes_give_the_results_of_one_worker(
    broker: str, tmp_path: Path
) -> None:
    campaigns = [f"stage-{i}" for i in range(4)]
    first = traffic(12_000, campaigns, seed=5, callees=2500)
    reader, cdrs, callees = await _two_stages(broker, tmp_path, first)
    try:
        # The per-callee worker is killed while calls still reach it.
        await _counted(reader, 3000)
        callees.kill9()
        second = traffic(4000, campaigns, seed=6, start=len(first), callees=2500)
        await produce(broker, second)
        callees = stage_worker(broker, tmp_path, "callees", "callees-2")
        await _exact(reader, first + second, cdrs, callees)
        # Its files, dropped after the kill, came back from the change log in bulk before
        # it joined (services/detector/restore.py), not one event at a time through faust.
        restored = re.search(
            r"changelog_restored\W+topic\W+cdrwatch-detector-callees-changelog\W+records\W+(\d+)",
            callees.log_path.read_text(),
        )
        assert restored and int(restored[1]) > 0, callees.log_tail()
        # Each stage ran in its own process: the CDR worker never read the callee topic.
        assert "callee-calls" not in _assigned(cdrs.log_path.read_text())
        # (its commit, every second, may follow the exact counts it made possible)
        await wait_until_async(
            lambda: "callee-calls" in _assigned(callees.log_path.read_text()),
            timeout=30,
            interval=0.5,
            message=f"the callees worker committed no callee-calls offset:\n{callees.log_tail()}",
        )
    finally:
        cdrs.stop()
        callees.stop()
        await reader.stop()


async def test_a_per_callee_worker_stopped_cleanly_restarts_on_its_kept_files_exactly(
    broker: str, tmp_path: Path
) -> None:
    """A plain restart (SIGTERM, then a start on the same data directory) keeps the
    per-callee RocksDB files (`app.LocalStore`): they hold the change log up to an offset
    the broker acknowledged, never past its end, and the restarted worker reads only what
    came after; the lockout counts stay exact."""
    campaigns = [f"keep-{i}" for i in range(3)]
    first = traffic(8000, campaigns, seed=7, callees=2000)
    reader, cdrs, callees = await _two_stages(broker, tmp_path, first)
    try:
        await _counted(reader, 3000)
        # The per-callee worker has applied calls and the broker acknowledged their change
        # log (its commit follows the acknowledgement) before it is stopped: a worker that
        # starts quickly is otherwise stopped before it has written anything to keep.
        await wait_until_async(
            lambda: "callee-calls" in _assigned(callees.log_path.read_text()),
            timeout=30,
            interval=0.2,
            message=f"the callees worker committed no callee-calls offset:\n{callees.log_tail()}",
        )
        callees.stop()  # SIGTERM: a clean stop
        assert "local_store_closed table=callees partitions=[0, 1, 2, 3]" in (
            callees.log_path.read_text()
        ), callees.log_tail()
        kept = _persisted_offsets(tmp_path / "data")
        ends = await _log_ends(broker, "cdrwatch-detector-callees-changelog")
        assert kept, "no partition's offset was written at the clean stop"
        for partition, offset in kept.items():
            assert 0 <= offset < ends[partition], (partition, offset, ends)

        second = traffic(3000, campaigns, seed=8, start=len(first), callees=2000)
        await produce(broker, second)
        callees = stage_worker(broker, tmp_path, "callees", "callees-2")
        await _exact(reader, first + second, cdrs, callees)
        assert "local_store_kept" in callees.log_path.read_text(), callees.log_tail()
    finally:
        cdrs.stop()
        callees.stop()
        await reader.stop()


async def test_an_all_worker_never_runs_beside_a_callees_worker(
    broker: str, tmp_path: Path
) -> None:
    """The per-callee stage runs in one form only (services/detector/stage_guard.py): an
    `all` worker refuses to start beside a live `callees` worker, starts once it stopped
    cleanly, and a `callees` worker started beside it then is refused in turn."""
    quick = {"CDRWATCH_STAGE_CHECK_SECONDS": "1"}
    callees = stage_worker(broker, tmp_path, "callees", "callees-1", **quick)
    whole: ServiceProcess | None = None
    try:
        await wait_until_async(
            lambda: _heartbeats(broker, "callees"),
            timeout=60,
            interval=0.5,
            message="the callees worker wrote no heartbeat",
        )
        refused = stage_worker(broker, tmp_path, "all", "all-refused", **quick)
        assert refused.proc is not None
        assert refused.proc.wait(60) == 2, refused.log_tail()
        assert (
            "cdrwatch detector --stage all refused: 1 `--stage callees` worker(s) run the "
            "per-callee stage already" in refused.log_path.read_text()
        ), refused.log_tail()

        callees.stop()  # a clean stop: its last heartbeat says so
        whole = stage_worker(broker, tmp_path, "all", "all", **quick)
        await wait_until_async(
            lambda: _heartbeats(broker, "all"),
            timeout=60,
            interval=0.5,
            message="the all worker wrote no heartbeat",
        )
        assert whole.proc is not None and whole.proc.poll() is None, whole.log_tail()
        late = stage_worker(broker, tmp_path, "callees", "callees-2", **quick)
        assert late.proc is not None
        assert late.proc.wait(60) == 2, late.log_tail()
        assert "`--stage all` worker(s) run the per-callee stage" in late.log_path.read_text()
        assert whole.proc.poll() is None, "the worker already running keeps running"
        assert "stage_conflict" not in whole.log_path.read_text(), whole.log_tail()
        for process in (refused, whole, late):  # the start-up check leaves no task behind
            assert not _logged(process, "Task was destroyed"), process.log_tail()
    finally:
        callees.stop()
        if whole is not None:
            whole.stop()


async def test_a_running_worker_reports_the_other_form_started_beside_it(
    broker: str, tmp_path: Path
) -> None:
    """Two workers started in the same seconds pass each other's start-up check; their
    heartbeat checks then see the conflict: the gauge, and an error logged."""
    settings = DetectorSettings(
        kafka_bootstrap=broker, data_dir=tmp_path / "data", stage="all", callee_store="memory://"
    )
    detector = Detector(settings)
    other = stage_guard.StageGuard(broker, settings.app_id, "callees", 1.0)
    await other.start()
    try:
        assert await detector.check_stage() is None
        gauge = detector.registry.get_sample_value
        assert gauge("cdrwatch_detector_stage_conflict") == 0
        await other.beat()
        conflict = await detector.check_stage()
        assert conflict is not None and conflict.form == "callees"
        assert gauge("cdrwatch_detector_stage_conflict") == 1
        assert await other.check() is not None, "the callees worker sees the all worker too"
        await other.stop(beat=True)  # a clean stop
        assert await detector.check_stage() is None
        assert gauge("cdrwatch_detector_stage_conflict") == 0
    finally:
        await other.stop(beat=False)
        assert detector.stage_guard is not None
        await detector.stage_guard.stop(beat=True)


def test_the_start_up_check_passes_before_any_heartbeat_topic_exists(
    broker: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The first worker of a deployment: nothing to read, nothing refused, no error (not
    even asyncio's "Task was destroyed but it is pending!" for a task the check left)."""
    settings = DetectorSettings(
        kafka_bootstrap=broker, data_dir=tmp_path, stage="all", app_id="fresh-deployment"
    )
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        refuse_a_second_callee_stage(settings)  # returns: no SystemExit, no exception
        gc.collect()  # a task left pending says so when it is collected
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def _logged(process: ServiceProcess, text: str) -> bool:
    return text in process.log_path.read_text()


async def _heartbeats(bootstrap: str, form: str) -> int:
    """How many heartbeats workers of `form` wrote (stage_guard)."""
    consumer = AIOKafkaConsumer(
        "cdrwatch-detector-stage-heartbeats",
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=1000)
    finally:
        await consumer.stop()
    values = [orjson.loads(m.value or b"{}") for ms in batch.values() for m in ms]
    return sum(1 for value in values if value.get("form") == form)


async def _two_stages(
    broker: str, tmp_path: Path, records: list[dict[str, Any]]
) -> tuple[OutputReader, ServiceProcess, ServiceProcess]:
    """`records` on the CDR topic, a reader of the outputs, and the two stage workers."""
    await produce(broker, records)
    reader = OutputReader(broker)
    await reader.start()
    cdrs = stage_worker(broker, tmp_path, "cdrs", "cdrs")
    return reader, cdrs, stage_worker(broker, tmp_path, "callees", "callees-1")


async def _counted(reader: OutputReader, calls: int) -> None:
    """Wait until the CDR stage has counted `calls` calls."""
    await wait_until_async(
        lambda: _poll_check(
            reader, lambda p: sum(c.attempts for c in p.cumulative.values()) >= calls
        ),
        timeout=120,
        interval=0.05,
        message=f"the CDR stage counted fewer than {calls:,} calls",
    )


async def _exact(
    reader: OutputReader,
    records: list[dict[str, Any]],
    cdrs: ServiceProcess,
    callees: ServiceProcess,
) -> None:
    """Wait until every minute bucket and every lockout count is exactly what the pure
    core finds for `records`."""
    expected_minutes = expected_buckets(records)
    await wait_for_totals(reader, totals_by_campaign(expected_minutes), cdrs, timeout=150)
    await await_exact_lockouts(
        reader,
        records,
        timeout=90,
        diagnosis=lambda: f"cdrs:\n{cdrs.log_tail()}\ncallees:\n{callees.log_tail()}",
    )
    assert (await reader.poll()).minutes == expected_minutes


def _persisted_offsets(data: Path) -> dict[int, int]:
    """The change-log offset faust keeps in each partition's RocksDB files (the store has
    a TTL, so each value ends with RocksDB's 4-byte timestamp)."""
    import rocksdict

    offsets = {}
    for path in sorted(data.glob("detector/callees-worker/**/callees-*.db")):
        db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True))
        try:
            raw = db.get(b"__faust\0offset__")
        finally:
            db.close()
        if raw is not None:
            offsets[int(path.stem.rsplit("-", 1)[1])] = int(raw[:-4])
    return offsets


async def _log_ends(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        ends = await confirm_log_ends(bootstrap, await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()
    return {tp.partition: end for tp, end in ends.items()}


def _assigned(log: str) -> str:
    """The topics a worker's log says it committed offsets of."""
    return " ".join(line for line in log.splitlines() if "offsets_committed" in line)
