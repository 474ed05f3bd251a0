"""Per-call classification (SPEC "Classification"): every edge, exact to the microsecond."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from functools import reduce
from typing import Any

import pytest

from services.detector.core.classify import classify, elapsed_seconds
from services.detector.core.model import EMPTY, BucketCounts, CallOutcome, CallRecord
from services.detector.core.profiles import load_profile

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # Monday 11:00 in Rome, within every profile's hours
ANSWER = T0 + timedelta(seconds=8)
SUNDAY = datetime(2026, 3, 8, 11, 0, tzinfo=UTC)


def s(seconds: str) -> timedelta:
    """Exact timedelta from a decimal string ("2.001")."""
    return timedelta(microseconds=int(Fraction(seconds) * 1_000_000))


def make_call(**changes: Any) -> CallRecord:
    base = CallRecord(
        call_id="c-1",
        campaign_id="camp-1",
        originated_at=T0,
        ended_at=T0 + timedelta(seconds=60),
    )
    return replace(base, **changes)


def answered(**changes: Any) -> CallRecord:
    return make_call(ringing_at=T0 + timedelta(seconds=2), answered_at=ANSWER, **changes)


def outcome(
    *,
    answered: bool = True,
    by_person: bool = True,
    amd_machine: bool = False,
    silent: bool = False,
    abandoned: bool = False,
    out_of_hours: bool = False,
    short_ring: bool = False,
) -> CallOutcome:
    return CallOutcome(
        answered=answered,
        answered_by_person=by_person,
        amd_machine=amd_machine,
        silent=silent,
        abandoned=abandoned,
        out_of_hours=out_of_hours,
        short_ring=short_ring,
    )


UNANSWERED = {"answered": False, "by_person": False}
GREETING_END = ANSWER + s("1.5")

CASES = [
    # --- connect limit: 2 s from ref (greeting end when known, else answer) ---------------
    pytest.param(
        answered(agent_connected_at=ANSWER + s("2.000")),
        outcome(),
        id="garante-2014-connect-2.000s-from-answer-not-abandoned",
    ),
    pytest.param(
        answered(agent_connected_at=ANSWER + s("2.001")),
        outcome(abandoned=True),
        id="ftc-310.4-connect-2.001s-from-answer-abandoned",
    ),
    pytest.param(
        answered(agent_connected_at=ANSWER + s("2.000001")),
        outcome(abandoned=True),
        id="connect-one-microsecond-over-2s-abandoned",
    ),
    pytest.param(
        answered(agent_connected_at=ANSWER + s("1.999")),
        outcome(),
        id="connect-1.999s-from-answer-not-abandoned",
    ),
    pytest.param(
        answered(greeting_ended_at=GREETING_END, agent_connected_at=GREETING_END + s("2.000")),
        outcome(),
        id="ftc-310.4-connect-2.000s-from-greeting-end-not-abandoned-though-3.5s-from-answer",
    ),
    pytest.param(
        answered(greeting_ended_at=GREETING_END, agent_connected_at=GREETING_END + s("2.001")),
        outcome(abandoned=True),
        id="ftc-310.4-connect-2.001s-from-greeting-end-abandoned",
    ),
    pytest.param(
        answered(greeting_ended_at=GREETING_END, agent_connected_at=ANSWER + s("1")),
        outcome(),
        id="agent-before-greeting-end-not-abandoned",
    ),
    pytest.param(
        answered(agent_connected_at=ANSWER),
        outcome(),
        id="agent-at-answer-not-abandoned",
    ),
    # --- silent vs abandoned ---------------------------------------------------------------
    pytest.param(
        answered(),
        outcome(silent=True, abandoned=True),
        id="garante-2014-no-agent-silent-and-abandoned",
    ),
    pytest.param(
        answered(message_type="comfort_noise", message_started_at=ANSWER),
        outcome(silent=True, abandoned=True),
        id="garante-2014-comfort-noise-still-silent",
    ),
    pytest.param(
        answered(message_type="safe_harbor", message_started_at=ANSWER + s("1")),
        outcome(silent=True, abandoned=True),
        id="ftc-safe-harbor-message-still-silent-and-abandoned",
    ),
    pytest.param(
        answered(agent_connected_at=ANSWER + s("3")),
        outcome(abandoned=True),
        id="late-agent-abandoned-not-silent",
    ),
    pytest.param(
        answered(hangup_side="callee"),
        outcome(silent=True, abandoned=True),
        id="callee-hangs-up-before-agent-still-silent",
    ),
    # --- AMD ---------------------------------------------------------------------------------
    pytest.param(
        answered(amd_result="machine"),
        outcome(by_person=False, amd_machine=True),
        id="amd-machine-not-a-person-neither-silent-nor-abandoned",
    ),
    pytest.param(
        answered(amd_result="machine", agent_connected_at=ANSWER + s("5")),
        outcome(by_person=False, amd_machine=True),
        id="amd-machine-with-late-agent-not-abandoned",
    ),
    pytest.param(
        answered(amd_result="human"),
        outcome(silent=True, abandoned=True),
        id="amd-human-is-person",
    ),
    pytest.param(
        answered(amd_result="notsure"),
        outcome(silent=True, abandoned=True),
        id="amd-notsure-counts-as-person",
    ),
    pytest.param(
        answered(amd_result="hangup"),
        outcome(silent=True, abandoned=True),
        id="amd-hangup-counts-as-person",
    ),
    pytest.param(
        answered(amd_result="none"),
        outcome(silent=True, abandoned=True),
        id="amd-not-run-counts-as-person",
    ),
    pytest.param(
        make_call(amd_result="machine", ended_at=T0 + s("30")),
        outcome(**UNANSWERED),
        id="amd-machine-on-unanswered-call-not-counted-as-machine",
    ),
    # --- short ring: < 15 s, unanswered, released by the system ----------------------------
    pytest.param(
        make_call(ringing_at=T0 + s("3"), ended_at=T0 + s("3") + s("14.999"), hangup_side="system"),
        outcome(**UNANSWERED, short_ring=True),
        id="ofcom-uk4-ring-14.999s-system-release-short",
    ),
    pytest.param(
        make_call(ringing_at=T0 + s("3"), ended_at=T0 + s("3") + s("15.000"), hangup_side="system"),
        outcome(**UNANSWERED),
        id="ofcom-uk4-ring-15.000s-not-short",
    ),
    pytest.param(
        make_call(ended_at=T0 + s("14.999"), hangup_side="system"),
        outcome(**UNANSWERED, short_ring=True),
        id="ftc-310.4b4ii-no-ringing-at-14.999s-from-origination-short",
    ),
    pytest.param(
        make_call(ended_at=T0 + s("15.000"), hangup_side="system"),
        outcome(**UNANSWERED),
        id="ftc-310.4b4ii-no-ringing-at-15.000s-from-origination-not-short",
    ),
    pytest.param(
        make_call(ringing_at=T0 + s("3"), ended_at=T0 + s("17.999"), hangup_side="system"),
        outcome(**UNANSWERED, short_ring=True),
        id="ring-measured-from-ringing-not-origination",
    ),
    pytest.param(
        make_call(ringing_at=T0 + s("1"), ended_at=T0 + s("6"), hangup_side=None),
        outcome(**UNANSWERED, short_ring=True),
        id="no-hangup-side-treated-as-system-release-short",
    ),
    pytest.param(
        make_call(ringing_at=T0 + s("1"), ended_at=T0 + s("6"), hangup_side="callee"),
        outcome(**UNANSWERED),
        id="callee-rejects-after-5s-not-short-ring",
    ),
    pytest.param(
        make_call(ringing_at=T0 + s("1"), ended_at=T0 + s("6"), hangup_side="agent"),
        outcome(**UNANSWERED),
        id="agent-side-release-not-system-not-short-ring",
    ),
    pytest.param(
        answered(ended_at=ANSWER + s("1"), hangup_side="system"),
        outcome(silent=True, abandoned=True),
        id="answered-call-ended-quickly-never-short-ring",
    ),
]


@pytest.mark.parametrize(("call", "expected"), CASES)
def test_classification(call: CallRecord, expected: CallOutcome) -> None:
    # Per-call rule verdicts have their own table (test_per_call_rules.py).
    result = classify(call, load_profile("it"))
    assert replace(result, violations=(), unverifiable=()) == expected


@pytest.mark.parametrize("profile", ["it", "it-assocontact", "uk", "us", "fr"])
def test_connect_limit_is_two_seconds_in_every_profile(profile: str) -> None:
    on_limit = answered(agent_connected_at=ANSWER + s("2.000"))
    over = answered(agent_connected_at=ANSWER + s("2.001"))
    assert not classify(on_limit, load_profile(profile)).abandoned
    assert classify(over, load_profile(profile)).abandoned


def test_connect_limit_override_moves_the_boundary() -> None:
    profile = load_profile("us", {"connect_limit_seconds": "2.5"})
    assert not classify(answered(agent_connected_at=ANSWER + s("2.5")), profile).abandoned
    assert classify(answered(agent_connected_at=ANSWER + s("2.500001")), profile).abandoned


def test_short_ring_minimum_override_moves_the_boundary() -> None:
    profile = load_profile("uk", {"short_ring_min_seconds": 20})
    assert classify(make_call(ended_at=T0 + s("19.999")), profile).short_ring
    assert not classify(make_call(ended_at=T0 + s("20")), profile).short_ring


HOURS_CASES = [
    pytest.param(
        make_call(originated_at=datetime(2026, 3, 2, 8, 0, tzinfo=UTC)),
        "it",
        False,
        id="it-empty-zones-home-zone-rome-09:00-in",
    ),
    pytest.param(
        make_call(originated_at=datetime(2026, 3, 2, 7, 59, 59, tzinfo=UTC)),
        "it",
        True,
        id="it-empty-zones-home-zone-rome-08:59:59-out",
    ),
    pytest.param(
        make_call(
            originated_at=datetime(2026, 3, 2, 8, 30, tzinfo=UTC), callee_zones=("Europe/London",)
        ),
        "it",
        True,
        id="callee-tz-london-08:30-out-though-09:30-in-rome",
    ),
    pytest.param(
        make_call(
            originated_at=datetime(2026, 7, 16, 0, 0, tzinfo=UTC),
            callee_zones=("America/New_York",),
            callee_region="US-FL",
        ),
        "us",
        True,
        id="fla-stat-501.616-20:00-out-though-federal-21:00-allows",
    ),
    pytest.param(
        make_call(
            originated_at=datetime(2026, 7, 16, 0, 0, tzinfo=UTC),
            callee_zones=("America/New_York",),
        ),
        "us",
        False,
        id="ftc-310.4c-20:00-new-york-in-without-state",
    ),
    pytest.param(
        make_call(
            originated_at=datetime(2026, 7, 15, 12, 0, tzinfo=UTC),
            callee_zones=("America/New_York", "America/Chicago"),
        ),
        "us",
        True,
        id="ftc-310.4c-most-restrictive-zone-chicago-07:00-out",
    ),
]


@pytest.mark.parametrize(("call", "profile", "out_of_hours"), HOURS_CASES)
def test_out_of_hours_uses_callee_zones_and_region(
    call: CallRecord, profile: str, out_of_hours: bool
) -> None:
    assert classify(call, load_profile(profile)).out_of_hours is out_of_hours


def test_outcomes_sum_into_bucket_counts() -> None:
    profile = load_profile("it")
    calls = [
        answered(agent_connected_at=ANSWER + s("1")),  # person, connected in time
        answered(agent_connected_at=ANSWER + s("2.5")),  # abandoned
        answered(),  # silent + abandoned
        answered(amd_result="machine"),  # machine
        make_call(ended_at=T0 + s("10")),  # short ring
        make_call(originated_at=SUNDAY, ended_at=SUNDAY + s("10")),  # Sunday, short ring
    ]
    counts = reduce(BucketCounts.add, (classify(c, profile) for c in calls), EMPTY)
    assert counts.as_dict() == {
        "attempts": 6,
        "answered": 4,
        "answered_by_person": 3,
        "amd_machine": 1,
        "silent": 1,
        "abandoned": 2,
        "out_of_hours": 1,
        "short_ring": 2,
    }


def test_outcome_fields_are_all_booleans() -> None:
    result = classify(answered(), load_profile("it"))
    assert all(
        isinstance(getattr(result, f.name), bool)
        for f in fields(result)
        if f.name not in ("violations", "unverifiable")
    )


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        pytest.param(s("2.001"), Fraction(2001, 1000), id="milliseconds-exact"),
        pytest.param(timedelta(microseconds=1), Fraction(1, 1_000_000), id="one-microsecond"),
        pytest.param(-s("1.5"), Fraction(-3, 2), id="negative"),
        pytest.param(timedelta(days=1), Fraction(86400), id="one-day"),
    ],
)
def test_elapsed_seconds_is_exact(delta: timedelta, expected: Fraction) -> None:
    assert elapsed_seconds(T0, T0 + delta) == expected
