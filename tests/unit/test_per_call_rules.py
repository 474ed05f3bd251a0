"""Per-call violation rules, one table row per rule edge; ids name the rule and its source."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from services.detector.core.classify import classify
from services.detector.core.model import CallRecord
from services.detector.core.profiles import load_profile

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # Monday, within hours everywhere below
ANSWER = T0 + timedelta(seconds=10)


def s(text: str) -> timedelta:
    return timedelta(microseconds=int(Decimal(text) * 1_000_000))


def call(**fields: Any) -> CallRecord:
    base: dict[str, Any] = {
        "call_id": "c1",
        "campaign_id": "k1",
        "originated_at": T0,
        "ringing_at": T0 + s("1"),
        "ended_at": ANSWER + s("60"),
        "callee_zones": ("Europe/Rome",),
    }
    base.update(fields)
    return CallRecord(**base)


def silent(**fields: Any) -> CallRecord:
    return call(**{"answered_at": ANSWER, "amd_result": "human", **fields})


def us(the_call: CallRecord) -> CallRecord:
    """The same call six hours later (11:00 in New York) to a New York number."""
    from dataclasses import fields as dc_fields
    from dataclasses import replace

    shifted = {
        f.name: getattr(the_call, f.name) + timedelta(hours=6)
        for f in dc_fields(the_call)
        if isinstance(getattr(the_call, f.name), datetime)
    }
    return replace(the_call, callee_zones=("America/New_York",), **shifted)


def connected(**fields: Any) -> CallRecord:
    return silent(**{"agent_connected_at": ANSWER + s("1"), **fields})


CASES = [
    # Italy: Garante 20 Feb 2014 n. 83
    pytest.param(
        "it",
        silent(ended_at=ANSWER + s("3.000"), message_type="comfort_noise"),
        (),
        (),
        id="garante-2014-p2-silent-released-at-3.000s-in-time",
    ),
    pytest.param(
        "it",
        silent(ended_at=ANSWER + s("3.001"), message_type="comfort_noise"),
        ("it-silent-release",),
        (),
        id="garante-2014-p2-silent-released-at-3.001s-late",
    ),
    pytest.param(
        "it",
        silent(ended_at=ANSWER + s("2"), message_type="info", message_started_at=ANSWER),
        ("it-comfort-noise",),
        (),
        id="garante-2014-p4-silent-without-comfort-noise",
    ),
    pytest.param(
        "it",
        silent(ended_at=ANSWER + s("2")),
        (),
        ("it-comfort-noise",),
        id="garante-2014-p4-message-type-not-reported-is-unverifiable",
    ),
    pytest.param(
        "it",
        connected(ended_at=ANSWER + s("5")),
        (),
        (),
        id="garante-2014-connected-call-no-per-call-rule",
    ),
    # IT-SC-2 "long silent wait": the agent connects more than 3 s after the answer
    *(
        pytest.param(
            profile,
            connected(agent_connected_at=ANSWER + s(wait), **extra),
            broken,
            (),
            id=f"garante-2014-it-sc2-{profile}-agent-at-{wait}s-{label}",
        )
        for profile in ("it", "it-assocontact")
        for wait, extra, broken, label in (
            ("3.000", {}, (), "in-time"),
            ("3.001", {}, (f"{profile}-long-silent-wait",), "long-wait"),
            ("5", {}, (f"{profile}-long-silent-wait",), "long-wait"),
            # from answered_at, not from the end of the greeting
            (
                "3.001",
                {"greeting_ended_at": ANSWER + s("2")},
                (f"{profile}-long-silent-wait",),
                "long-wait-despite-greeting",
            ),
            (
                "3.001",
                {"amd_result": "notsure"},
                (f"{profile}-long-silent-wait",),
                "amd-notsure-is-a-person",
            ),
            ("3.001", {"amd_result": "machine"}, (), "machine-is-not-a-person"),
        )
    ),
    pytest.param(
        "it",
        silent(ended_at=ANSWER + s("5"), message_type="comfort_noise"),
        ("it-silent-release",),
        (),
        id="garante-2014-it-sc2-silent-released-after-5s-stays-a-late-release-not-a-wait",
    ),
    pytest.param(
        "it",
        connected(agent_connected_at=ANSWER + s("4"), callee_zones=("Europe/London",)),
        ("it-long-silent-wait",),
        (),
        id="garante-2014-it-sc2-long-wait-whatever-the-callee-zone",
    ),
    pytest.param(
        "uk",
        connected(agent_connected_at=ANSWER + s("4"), callee_zones=("Europe/London",)),
        ("uk-abandoned-message",),
        (),
        id="ofcom-no-long-silent-wait-rule-outside-italy",
    ),
    pytest.param(
        "it",
        silent(
            originated_at=T0 + timedelta(hours=10),
            ringing_at=None,
            answered_at=T0 + timedelta(hours=10, seconds=9),
            ended_at=T0 + timedelta(hours=10, seconds=11),
            message_type="comfort_noise",
        ),
        ("it-calling-hours",),
        (),
        id="codice-condotta-2024-20-00-rome-out-of-hours",
    ),
    # United Kingdom: Ofcom
    pytest.param(
        "uk",
        silent(ended_at=ANSWER + s("2"), callee_zones=("Europe/London",)),
        ("uk-silent-call", "uk-abandoned-message"),
        (),
        id="ofcom-2016-any-silent-call-and-no-message",
    ),
    pytest.param(
        "uk",
        silent(
            ended_at=ANSWER + s("9"),
            message_type="info",
            message_started_at=ANSWER + s("2.000"),
            callee_zones=("Europe/London",),
        ),
        (),
        (),
        id="ofcom-uk2-message-at-2.000s-in-time",
    ),
    pytest.param(
        "uk",
        silent(
            ended_at=ANSWER + s("9"),
            message_type="info",
            message_started_at=ANSWER + s("2.001"),
            callee_zones=("Europe/London",),
        ),
        ("uk-abandoned-message",),
        (),
        id="ofcom-uk2-message-at-2.001s-late",
    ),
    pytest.param(
        "uk",
        silent(
            ended_at=ANSWER + s("9"),
            message_type="info",
            greeting_ended_at=ANSWER + s("1"),
            message_started_at=ANSWER + s("3.000"),
            callee_zones=("Europe/London",),
        ),
        (),
        (),
        id="ofcom-uk2-message-timed-from-greeting-end",
    ),
    pytest.param(
        "uk",
        silent(ended_at=ANSWER + s("9"), message_type="info", callee_zones=("Europe/London",)),
        ("uk-abandoned-message",),
        (),
        id="ofcom-uk2-message-type-without-start-unproven",
    ),
    pytest.param(
        "uk",
        silent(
            ended_at=ANSWER + s("9"),
            message_type="comfort_noise",
            message_started_at=ANSWER,
            callee_zones=("Europe/London",),
        ),
        ("uk-silent-call", "uk-abandoned-message"),
        (),
        id="ofcom-2016-comfort-noise-is-not-an-information-message",
    ),
    pytest.param(
        "uk",
        call(ended_at=T0 + s("15.999"), hangup_side="system", callee_zones=("Europe/London",)),
        ("uk-short-ring",),
        (),
        id="ofcom-uk4-ring-14.999s-short",
    ),
    pytest.param(
        "uk",
        call(ended_at=T0 + s("16.000"), hangup_side="system", callee_zones=("Europe/London",)),
        (),
        (),
        id="ofcom-uk4-ring-15.000s-ok",
    ),
    pytest.param(
        "uk",
        connected(
            originated_at=T0 - timedelta(hours=3),
            ringing_at=None,
            answered_at=T0 - timedelta(hours=3) + s("5"),
            agent_connected_at=T0 - timedelta(hours=3) + s("6"),
            ended_at=T0 - timedelta(hours=3) + s("60"),
            callee_zones=("Europe/London",),
        ),
        ("uk-calling-hours",),
        (),
        id="ofcom-advisory-07-00-london-out-of-hours",
    ),
    # United States: FTC TSR / FCC TCPA
    pytest.param(
        "us",
        us(
            silent(
                ended_at=ANSWER + s("9"),
                message_type="safe_harbor",
                message_started_at=ANSWER + s("1.5"),
            )
        ),
        (),
        (),
        id="16cfr310.4b4iii-safe-harbor-message-in-time",
    ),
    pytest.param(
        "us",
        us(silent(ended_at=ANSWER + s("9"))),
        ("us-abandoned-message",),
        (),
        id="16cfr310.4b4iii-abandoned-without-message",
    ),
    pytest.param(
        "us",
        us(call(ended_at=T0 + s("10"))),
        ("us-short-ring",),
        (),
        id="16cfr310.4b4ii-unanswered-released-before-15s",
    ),
    pytest.param(
        "us",
        us(call(ended_at=T0 + s("10"), hangup_side="callee")),
        (),
        (),
        id="16cfr310.4b4ii-callee-hung-up-not-short-ring",
    ),
]


@pytest.mark.parametrize(("profile", "the_call", "broken", "unverifiable"), CASES)
def test_per_call_rules(
    profile: str, the_call: CallRecord, broken: tuple[str, ...], unverifiable: tuple[str, ...]
) -> None:
    outcome = classify(the_call, load_profile(profile))
    assert outcome.violations == broken
    assert outcome.unverifiable == unverifiable


def test_a_disabled_rule_is_not_judged() -> None:
    profile = load_profile("it")
    from dataclasses import replace

    rules = tuple(replace(r, enabled=False) for r in profile.per_call_rules)
    outcome = classify(silent(ended_at=ANSWER + s("5")), replace(profile, per_call_rules=rules))
    assert outcome.violations == () and outcome.unverifiable == ()


def test_ofcom_late_connected_call_is_abandoned_but_not_silent() -> None:
    late = silent(agent_connected_at=ANSWER + s("2.5"), callee_zones=("Europe/London",))
    outcome = classify(late, load_profile("uk"))
    assert outcome.abandoned and not outcome.silent
    assert outcome.violations == ("uk-abandoned-message",)
