"""The detector's table adapter with a dict standing in for the faust table: partition
binding, event-time expiry of dedup entries and buckets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from services.detector.app import TableState
from services.detector.core.engine import CampaignConfig, Engine, Event
from services.detector.core.model import CallRecord
from services.detector.core.profiles import load_profile
from services.detector.core.retention import bucket_expired, seen_expired
from services.detector.core.windows import minute_of

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def call(n: int, at: datetime, campaign: str = "c1") -> CallRecord:
    return CallRecord(
        call_id=f"call-{n}",
        campaign_id=campaign,
        originated_at=at,
        ended_at=at + timedelta(seconds=30),
        callee_zones=("Europe/Rome",),
    )


class FaustEvent:
    """What TableState needs of a faust event: its message's partition (weak-referenceable,
    as faust's current-event context holds a weak reference)."""

    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(partition=partition)


def faust_event(partition: int) -> FaustEvent:
    return FaustEvent(partition)


def run(state: TableState, calls: list[CallRecord], first_offset: int = 0) -> None:
    config = CampaignConfig(load_profile("it"))
    engine = Engine(state, lambda _c: config, lateness=timedelta(days=7), clock=lambda: T0)
    state.bind([faust_event(3)])
    engine.process([Event(3, first_offset + i, c) for i, c in enumerate(calls)])


def _scanned_minutes(table: dict[str, object], campaign: str) -> list[int]:
    return sorted(
        int(key.rpartition("\x1f")[2])
        for key in table
        if key.startswith("b\x1f") and key[2:].rpartition("\x1f")[0] == campaign
    )


def test_the_bucket_minute_index_follows_writes_sweeps_and_a_reassignment() -> None:
    """The engine sums windows over `bucket_minutes` alone: a bucket the index misses would
    drop out of every window, so it must name exactly the table's buckets, whatever wrote
    or deleted them (a batch, a sweep, faust's recovery before a reassignment)."""
    table: dict[str, object] = {}
    state = TableState(table)
    calls = [call(i, T0 + timedelta(minutes=7 * i), f"c{i % 2}") for i in range(40)]
    run(state, calls)
    run(state, [call(100, T0 + timedelta(days=10), "c0")], first_offset=40)
    for campaign in ("c0", "c1"):
        assert state.bucket_minutes(campaign, 0, 10**9) == _scanned_minutes(table, campaign)
    assert state.sweep(timedelta(days=8), timedelta(days=7)) > 0  # c0's old buckets go
    assert state.bucket_minutes("c0", 0, 10**9) == _scanned_minutes(table, "c0") != []
    assert state.bucket_minutes("c1", 0, 10**9) == _scanned_minutes(table, "c1") != []
    # Written behind its back (faust's recovery after an assignment): rebuilt from the table.
    table[f"b\x1fc1\x1f{minute_of(T0) + 3}"] = table[f"b\x1fc1\x1f{minute_of(T0) + 7}"]
    state.forget_indexes()
    assert minute_of(T0) + 3 in state.bucket_minutes("c1", 0, 10**9)
    assert state.bucket_minutes("c1", 0, 10**9) == _scanned_minutes(table, "c1")
    first = minute_of(T0) + 7
    assert state.bucket_minutes("c1", first, first + 15) == [first, first + 14]


def test_entries_expire_relative_to_the_campaigns_newest_call_not_the_wall_clock() -> None:
    table: dict[str, object] = {}
    state = TableState(table)
    old = [call(i, T0 + timedelta(minutes=i)) for i in range(3)]
    run(state, old)
    assert state.sweep(timedelta(days=8), timedelta(days=7)) == 0  # nothing is old yet
    run(state, [call(100, T0 + timedelta(days=10))], first_offset=3)
    deleted = state.sweep(timedelta(days=8), timedelta(days=7))
    # 3 seen-entries (> 8 days behind) and 3 buckets (> 9 days behind) of the old calls
    assert deleted == 6
    assert state.get_seen("\x1fcall-0") is None
    assert state.get_seen("\x1fcall-100") is not None
    assert state.get_bucket("c1", minute_of(T0)) is None
    assert state.get_campaign("c1").totals.attempts == 4  # totals are kept


def test_a_backfilled_campaign_keeps_its_state_whatever_the_wall_clock_says() -> None:
    table: dict[str, object] = {}
    state = TableState(table)
    last_year = T0 - timedelta(days=365)
    run(state, [call(i, last_year + timedelta(hours=i)) for i in range(5)])
    assert state.sweep(timedelta(days=8), timedelta(days=7)) == 0


def test_retention_boundaries() -> None:
    day = 1440
    assert not seen_expired(0, 8 * day, timedelta(days=8))
    assert seen_expired(0, 8 * day + 1, timedelta(days=8))
    assert not bucket_expired(0, 9 * day, timedelta(days=7))
    assert bucket_expired(0, 9 * day + 1, timedelta(days=7))


def test_fast_encoders_write_exactly_the_wire_models() -> None:
    """The detector skips pydantic when publishing; its JSON must parse as AlertV1 and
    StatsV1 and equal what the models would produce."""
    from schemas import AlertV1, StatsV1, stats_from_counts
    from services.detector.wire import alert_body, stats_body

    calls = [
        CallRecord(
            call_id=f"c{i}",
            campaign_id="k",
            originated_at=T0 + timedelta(seconds=7 * i, microseconds=i),
            answered_at=T0 + timedelta(seconds=7 * i + 5),
            agent_connected_at=None if i % 9 == 0 else T0 + timedelta(seconds=7 * i + 6),
            ended_at=T0 + timedelta(seconds=7 * i + 60),
            callee_zones=("Europe/Rome",),
        )
        for i in range(150)
    ]
    config = CampaignConfig(load_profile("it"))
    state = TableState({})
    state.bind([faust_event(0)])
    engine = Engine(state, lambda _c: config, lateness=timedelta(days=7), clock=lambda: T0)
    out = engine.process([Event(0, i, c) for i, c in enumerate(calls)])
    assert out.alerts and out.window_stats
    for payload in out.alerts:
        body = alert_body(payload, campaign_id="k", tenant_id="t")
        model = AlertV1.model_validate({**payload, "campaign_id": "k", "tenant_id": "t"})
        assert AlertV1.model_validate_json(body) == model
    for w in out.window_stats:
        expected = stats_from_counts(w.campaign_id, w.start, w.end, w.counts.as_dict())
        assert StatsV1.model_validate_json(stats_body(w.campaign_id, w.start, w.end, w.counts)) == (
            expected
        )


def test_a_batch_writes_its_seen_entries_as_one_record_per_partition() -> None:
    """Dedup costs one change-log record per batch and partition, not one per call; a
    fresh worker (index rebuilt from the restored table) recognises every call."""
    from tests.service.test_detector_crash import ChangeLogTable

    table = ChangeLogTable()
    state = TableState(table)
    run(state, [call(i, T0 + timedelta(seconds=i)) for i in range(50)])
    seen_records = [k for k, _v in table.log if k.startswith(("s\x1f", "S\x1f"))]
    assert seen_records == ["S\x1f3\x1f0"]
    assert table.log.index((seen_records[0], table[seen_records[0]])) == 0  # before buckets
    restarted = TableState(ChangeLogTable.restored(table.log))
    assert [restarted.get_seen(f"\x1fcall-{i}") for i in (0, 49)] == [
        (3, 0, minute_of(T0), "c1"),
        (3, 49, minute_of(T0), "c1"),
    ]
    assert restarted.get_seen("\x1fcall-50") is None


def test_a_seen_chunk_loses_only_its_expired_entries_and_old_single_entries_still_count() -> None:
    table: dict[str, object] = {
        # one record per call, as the detector wrote them before chunks
        "s\x1f\x1flegacy": [3, 7, minute_of(T0), "c1"],
    }
    state = TableState(table)
    assert state.get_seen("\x1flegacy") == (3, 7, minute_of(T0), "c1")
    old = call(0, T0)
    recent = call(1, T0 + timedelta(days=9))
    run(state, [old, recent], first_offset=10)  # one chunk holding both
    run(state, [call(2, T0 + timedelta(days=9, minutes=1))], first_offset=12)
    # c1's newest call is 9 days on: `old` and `legacy` are past the 8-day retention
    assert state.sweep(timedelta(days=8), timedelta(days=7)) >= 2
    assert state.get_seen("\x1fcall-0") is None and state.get_seen("\x1flegacy") is None
    assert state.get_seen("\x1fcall-1") == (3, 11, minute_of(recent.originated_at), "c1")
    kept = [list(entry) for entry in table["S\x1f3\x1f10"]]  # tuples here, arrays in JSON
    assert kept == [["\x1fcall-1", 11, minute_of(recent.originated_at), "c1"]]
    rebuilt = TableState(table)
    assert rebuilt.get_seen("\x1fcall-0") is None
    assert rebuilt.get_seen("\x1fcall-2") is not None


def test_the_callee_databases_are_written_without_rocksdb_s_write_ahead_log(tmp_path) -> None:
    # The local callee databases are dropped and rebuilt from the change log at every start,
    # so their write-ahead log is pure cost: the detector opens them with it off.
    from faust.stores.rocksdb import RocksDBOptions

    from services.common.settings import DetectorSettings
    from services.detector.app import Detector, callee_store_options

    settings = DetectorSettings(data_dir=tmp_path / "data")
    detector = Detector(settings)
    hooked = detector.callees.data.rocksdb_options
    plain = RocksDBOptions(**callee_store_options(settings), use_rocksdict=True)
    wal_bytes = {}
    for name, options in (("hooked", hooked), ("plain", plain)):
        path = tmp_path / f"{name}.db"
        db = options.open(path)
        for n in range(1000):
            db.put(f"default/{n:016x}".encode(), b'[["c","default/k",1,1,""]]')
        assert db.get(b"default/00000000000003e7") is not None
        wal_bytes[name] = sum(f.stat().st_size for f in path.glob("*.log"))
        db.close()
    assert wal_bytes["plain"] > 0
    assert wal_bytes["hooked"] == 0


def test_a_campaign_record_read_back_is_the_stored_one_whatever_its_reader_changed() -> None:
    # TableState decodes a campaign's record once per write and hands out copies: the
    # engine changes what it reads in place (samples, alerts, periods), and that must not
    # reach the next read unless it is written; a record recovered into the table (another
    # object) is read as it is.
    table: dict[str, object] = {}
    state = TableState(table)
    run(state, [call(n, T0 + timedelta(minutes=n)) for n in range(3)])
    first = state.get_campaign("c1")
    assert first is not None
    again = state.get_campaign("c1")
    assert again == first and again is not first
    first.silent_samples.append((1, "changed"))
    first.alerts["x"] = next(iter(first.alerts.values()), None)  # type: ignore[assignment]
    if first.periods is not None:
        first.periods[99] = first.totals
    first.too_late = 7
    unchanged = state.get_campaign("c1")
    assert unchanged == again
    recovered = dict(table["c\x1fc1"])  # type: ignore[call-overload]
    recovered["too_late"] = 5
    table["c\x1fc1"] = recovered
    read = state.get_campaign("c1")
    assert read is not None and read.too_late == 5
    state.put_campaign("c1", read, 3)
    read.duplicates = 9  # after the write: not in the table
    latest = state.get_campaign("c1")
    assert latest is not None and latest.too_late == 5 and latest.duplicates == 0
