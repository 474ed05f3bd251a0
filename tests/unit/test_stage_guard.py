"""services/detector/stage_guard.py: which heartbeats make a worker's form of the
per-callee stage conflict, and how heartbeats are read."""

from __future__ import annotations

from services.detector.stage_guard import Heartbeat, find_conflict

NOW = 1_000_000_000
HORIZON = 90_000


def beat(worker: str, form: str, age_ms: int = 0, *, running: bool = True) -> Heartbeat:
    return Heartbeat(worker, form, NOW - age_ms, running)


def test_an_all_worker_conflicts_with_a_live_callees_worker_and_the_reverse() -> None:
    beats = [beat("a", "all"), beat("c", "callees", 30_000)]
    conflict = find_conflict("all", "a", beats, NOW, HORIZON)
    assert conflict is not None and (conflict.form, conflict.workers) == ("callees", 1)
    assert "--stage cdrs" in conflict.message
    conflict = find_conflict("callees", "c", beats, NOW, HORIZON)
    assert conflict is not None and (conflict.form, conflict.workers) == ("all", 1)


def test_workers_of_the_same_form_scale_out_without_conflict() -> None:
    beats = [beat("a1", "all"), beat("a2", "all"), beat("c1", "callees", running=False)]
    assert find_conflict("all", "a1", beats, NOW, HORIZON) is None
    beats = [beat("c1", "callees"), beat("c2", "callees")]
    assert find_conflict("callees", "c1", beats, NOW, HORIZON) is None


def test_a_worker_stopped_cleanly_or_silent_for_three_intervals_is_gone() -> None:
    stopped = [beat("c", "callees", 5_000), beat("c", "callees", 1_000, running=False)]
    assert find_conflict("all", "a", stopped, NOW, HORIZON) is None
    silent = [beat("c", "callees", HORIZON + 1)]
    assert find_conflict("all", "a", silent, NOW, HORIZON) is None
    # its newest heartbeat decides, whatever order they are read in
    restarted = [beat("c", "callees", 1_000), beat("c", "callees", 5_000, running=False)]
    assert find_conflict("all", "a", restarted, NOW, HORIZON) is not None


def test_a_cdrs_worker_never_conflicts() -> None:
    assert (
        find_conflict("cdrs", "x", [beat("a", "all"), beat("c", "callees")], NOW, HORIZON) is None
    )


def test_heartbeats_round_trip_and_foreign_records_are_ignored() -> None:
    heartbeat = beat("w", "callees", 7)
    assert Heartbeat.decode(heartbeat.encode()) == heartbeat
    assert Heartbeat.decode(b"not json") is None
    assert Heartbeat.decode(b'{"worker": "w"}') is None
    assert Heartbeat.decode(None) is None
