"""Per-callee lockouts and frequency caps: boundaries, exemptions, late triggers, order
independence against a brute-force definition, pruning and the compact JSON form.

Case ids name the rule and its source: Garante 20 Feb 2014 n. 83 IT-SC-5 (`garante-2014`),
Ofcom UK-5 / UK-6 (`ofcom`), Décret 2022-1313 (`decret-2022-1313`)."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.detector.core.lockouts import (
    MAX_CALLS_PER_CALLEE,
    CalleeCall,
    LockoutRules,
    LockoutViolation,
    callee_call,
    from_json,
    lockout_end,
    prune,
    record_call,
    to_json,
)
from services.detector.core.model import CallOutcome, CallRecord
from services.detector.core.profiles import Profile, load_profile

PROFILES = {name: load_profile(name) for name in ("it", "uk", "fr")}
RULES = {name: LockoutRules.of(profile) for name, profile in PROFILES.items()}
ROME, LONDON, PARIS = "Europe/Rome", "Europe/London", "Europe/Paris"
SECOND = timedelta(seconds=1)

IT_SILENT = "it-silent-lockout"
UK_ABANDONED = "uk-abandoned-lockout"
UK_AMD = "uk-amd-lockout"
FR_REFUSAL = "fr-refusal-lockout"
FR_FREQUENCY = "fr-frequency"

Pair = tuple[str, str]


def local(text: str, zone: str) -> datetime:
    """Local wall time `text` (ISO, no offset) in `zone`, as UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def cc(
    call_id: str,
    originated_at: datetime,
    *triggers: str,
    agent: bool = False,
    campaign: str = "k1",
) -> CalleeCall:
    return CalleeCall(call_id, campaign, originated_at, agent, frozenset(triggers))


def feed(
    calls: Iterable[CalleeCall], rules: LockoutRules
) -> tuple[tuple[CalleeCall, ...], list[LockoutViolation]]:
    history: tuple[CalleeCall, ...] = ()
    found: list[LockoutViolation] = []
    for call in calls:
        history, new = record_call(history, call, rules)
        found.extend(new)
    return history, found


def pairs(violations: Iterable[LockoutViolation]) -> set[Pair]:
    return {(v.rule_id, v.call_id) for v in violations}


def brute_force(calls: Sequence[CalleeCall], profile: Profile) -> set[Pair]:
    """The violations of the whole set at once, written from the rules' wording with local
    dates (not instants) for calendar days."""
    zone = ZoneInfo(profile.home_zone)

    def day(call: CalleeCall) -> date:
        return call.originated_at.astimezone(zone).date()

    found: set[Pair] = set()
    for call in calls:
        for rule in profile.lockouts:
            if rule.agent_guaranteed_exempt and call.agent_guaranteed:
                continue
            for trigger in calls:
                if trigger.call_id == call.call_id or rule.trigger not in trigger.triggers:
                    continue
                if not trigger.originated_at < call.originated_at:
                    continue
                after = rule.after
                if rule.hours is not None:
                    elapsed = call.originated_at - trigger.originated_at
                    locked = elapsed < timedelta(hours=rule.hours)
                    if after is not None:
                        assert after.hours is not None
                        locked = locked and elapsed >= timedelta(hours=after.hours)
                else:
                    assert rule.calendar_days is not None
                    locked = day(call) <= day(trigger) + timedelta(days=rule.calendar_days)
                    if after is not None:
                        # "after" ends at the midnight starting the day after its last day
                        assert after.calendar_days is not None
                        locked = locked and day(call) > day(trigger) + timedelta(
                            days=after.calendar_days
                        )
                if locked:
                    found.add((rule.id, call.call_id))
        for cap in profile.frequency_caps:
            first_day = day(call) - timedelta(days=cap.window_days - 1)
            earlier = [
                other
                for other in calls
                if other.call_id != call.call_id
                and other.originated_at <= call.originated_at
                and day(other) >= first_day
            ]
            if len(earlier) >= cap.max_calls:
                found.add((cap.id, call.call_id))
    return found


# --- boundaries, one table per source -----------------------------------------------------

S = ("silent", "abandoned")  # every silent call is also abandoned
IT_MONDAY = local("2026-03-02T10:00:00", ROME)
IT_SPRING = local("2026-03-26T10:00:00", ROME)  # Thu; Rome moves to CEST on Sun 2026-03-29
IT_AUTUMN = local("2026-10-22T10:00:00", ROME)  # Thu; Rome back to CET on Sun 2026-10-25
IT_NEXT = "it-silent-next-call"
DAY = timedelta(days=1)
FIVE_DAYS = timedelta(hours=120)
TEN_DAYS = timedelta(hours=240)

IT_CASES = [
    # Garante 20 Feb 2014 n. 83, IT-SC-5: no call at all for 5 days (120 h) after a silent
    # call, agent guaranteed or not; the next contact (every call of the following 120 h)
    # only with an operator guaranteed.
    *(
        pytest.param(
            [cc("s1", IT_MONDAY, *S), cc("r1", IT_MONDAY + offset, agent=agent)],
            expected,
            id=f"garante-2014-it-sc5-{label}-{'agent' if agent else 'no-agent'}",
        )
        for label, offset, agent, expected in (
            ("4d23h59m59s-after", FIVE_DAYS - SECOND, False, {(IT_SILENT, "r1")}),
            ("4d23h59m59s-after", FIVE_DAYS - SECOND, True, {(IT_SILENT, "r1")}),
            ("5d-after-next-call", FIVE_DAYS, False, {(IT_NEXT, "r1")}),
            ("5d-after-next-call", FIVE_DAYS, True, set()),
            ("9d23h59m59s-after-next-call", TEN_DAYS - SECOND, False, {(IT_NEXT, "r1")}),
            ("9d23h59m59s-after-next-call", TEN_DAYS - SECOND, True, set()),
            ("10d-after-free", TEN_DAYS, False, set()),
            ("10d-after-free", TEN_DAYS, True, set()),
            ("2d-after", 2 * DAY, True, {(IT_SILENT, "r1")}),
        )
    ),
    pytest.param(
        [cc("s1", IT_MONDAY, *S), cc("r1", IT_MONDAY + SECOND)],
        {(IT_SILENT, "r1")},
        id="garante-2014-it-sc5-one-second-after-locked",
    ),
    pytest.param(
        [cc("s1", IT_MONDAY, *S), cc("r1", IT_MONDAY)],
        set(),
        id="garante-2014-it-sc5-same-instant-is-not-after",
    ),
    pytest.param(
        [cc("s1", IT_MONDAY, *S), cc("r1", IT_MONDAY - SECOND)],
        set(),
        id="garante-2014-it-sc5-earlier-call-free",
    ),
    pytest.param(
        [cc("a1", IT_MONDAY, "abandoned"), cc("r1", IT_MONDAY + DAY)],
        set(),
        id="garante-2014-it-sc5-late-agent-is-not-silent",
    ),
    pytest.param(
        [cc("s1", IT_MONDAY, *S), cc("r1", IT_MONDAY + 2 * DAY, campaign="k2")],
        {(IT_SILENT, "r1")},
        id="garante-2014-it-sc5-other-campaign-same-tenant-locked",
    ),
    pytest.param(
        [
            cc("s1", IT_MONDAY, *S),
            cc("r1", IT_MONDAY + DAY),
            cc("r2", IT_MONDAY + 3 * DAY, agent=True),
            cc("r3", IT_MONDAY + 6 * DAY, agent=True),
            cc("r4", IT_MONDAY + 7 * DAY),
            cc("r5", IT_MONDAY + 11 * DAY),
        ],
        {(IT_SILENT, "r1"), (IT_SILENT, "r2"), (IT_NEXT, "r4")},
        id="garante-2014-it-sc5-every-call-in-5-days-locked-then-agent-only",
    ),
    pytest.param(
        [cc("s1", IT_MONDAY, *S), cc("s2", IT_MONDAY + 3 * DAY, *S), cc("r1", IT_MONDAY + 6 * DAY)],
        {(IT_SILENT, "s2"), (IT_SILENT, "r1"), (IT_NEXT, "r1")},
        id="garante-2014-it-sc5-silent-re-call-restarts-the-lockout",
    ),
    pytest.param(
        [cc("s1", IT_SPRING, *S), cc("r1", IT_SPRING + FIVE_DAYS - SECOND)],
        {(IT_SILENT, "r1")},
        id="garante-2014-it-sc5-dst-spring-120-real-hours-last-second-locked",
    ),
    pytest.param(
        [cc("s1", IT_SPRING, *S), cc("r1", local("2026-03-31T11:00:00", ROME))],
        {(IT_NEXT, "r1")},
        id="garante-2014-it-sc5-dst-spring-120-real-hours-end-at-11-cest",
    ),
    pytest.param(
        [cc("s1", IT_AUTUMN, *S), cc("r1", local("2026-10-27T08:59:59", ROME))],
        {(IT_SILENT, "r1")},
        id="garante-2014-it-sc5-dst-autumn-120-real-hours-last-second-locked",
    ),
    pytest.param(
        [cc("s1", IT_AUTUMN, *S), cc("r1", local("2026-10-27T09:00:00", ROME))],
        {(IT_NEXT, "r1")},
        id="garante-2014-it-sc5-dst-autumn-120-real-hours-end-at-09-cet",
    ),
]

UK_T0 = utc("2026-01-12T12:00:00")
UK_BST_START = utc("2026-03-27T12:00:00")  # Fri; London moves to BST on Sun 2026-03-29

UK_CASES = [
    pytest.param(
        [cc("a1", UK_T0, "abandoned"), cc("r1", UK_T0 + timedelta(hours=72) - SECOND)],
        {(UK_ABANDONED, "r1")},
        id="ofcom-uk5-72h-minus-1s-locked",
    ),
    pytest.param(
        [cc("a1", UK_T0, "abandoned"), cc("r1", UK_T0 + timedelta(hours=72))],
        set(),
        id="ofcom-uk5-72h-exactly-is-free",
    ),
    pytest.param(
        [cc("a1", UK_T0, "abandoned"), cc("r1", UK_T0)],
        set(),
        id="ofcom-uk5-same-instant-is-not-after",
    ),
    pytest.param(
        [cc("a1", UK_T0, *S), cc("r1", UK_T0 + timedelta(hours=1))],
        {(UK_ABANDONED, "r1")},
        id="ofcom-uk5-silent-call-is-abandoned",
    ),
    pytest.param(
        [cc("a1", UK_BST_START, "abandoned"), cc("r1", utc("2026-03-30T11:59:59"))],
        {(UK_ABANDONED, "r1")},
        id="ofcom-uk5-72h-across-bst-start-real-hours-locked",
    ),
    pytest.param(
        [cc("a1", UK_BST_START, "abandoned"), cc("r1", utc("2026-03-30T12:00:00"))],
        set(),
        id="ofcom-uk5-72h-across-bst-start-real-hours-free",
    ),
    pytest.param(
        [cc("m1", UK_T0, "amd_machine"), cc("r1", UK_T0 + timedelta(days=1))],
        set(),
        id="ofcom-uk5-amd-machine-is-no-abandoned-trigger",
    ),
    pytest.param(
        [cc("m1", utc("2026-01-15T09:00:00"), "amd_machine"), cc("r1", utc("2026-01-15T23:59:59"))],
        {(UK_AMD, "r1")},
        id="ofcom-uk6-amd-same-london-day-last-second-locked",
    ),
    pytest.param(
        [cc("m1", utc("2026-01-15T09:00:00"), "amd_machine"), cc("r1", utc("2026-01-16T00:00:00"))],
        set(),
        id="ofcom-uk6-amd-next-london-midnight-free",
    ),
    pytest.param(
        [cc("m1", utc("2026-06-10T22:30:00"), "amd_machine"), cc("r1", utc("2026-06-10T22:59:59"))],
        {(UK_AMD, "r1")},
        id="ofcom-uk6-amd-same-london-day-bst-locked",
    ),
    pytest.param(
        [cc("m1", utc("2026-06-10T22:30:00"), "amd_machine"), cc("r1", utc("2026-06-10T23:00:00"))],
        set(),
        id="ofcom-uk6-amd-bst-midnight-free-same-utc-day",
    ),
    pytest.param(
        [cc("m1", utc("2026-06-10T23:30:00"), "amd_machine"), cc("r1", utc("2026-06-11T22:59:59"))],
        {(UK_AMD, "r1")},
        id="ofcom-uk6-amd-after-utc-midnight-is-london-next-day-locked",
    ),
]

FR_REFUSED = local("2026-01-05T15:00:00", PARIS)
FR_REFUSED_WINTER = local("2026-02-10T11:00:00", PARIS)  # +60 days crosses 2026-03-29
FR_D = [local(f"2026-01-{d:02d}T10:00:00", PARIS) for d in (5, 6, 7, 8)]
FR_SPRING = [local(f"2026-03-{d:02d}T10:00:00", PARIS) for d in (10, 11, 12, 13)]


def four(times: Sequence[datetime], *, agent: bool = False) -> list[CalleeCall]:
    return [cc(f"n{i}", t, agent=agent) for i, t in enumerate(times, 1)]


FR_CASES = [
    pytest.param(
        [cc("f1", FR_REFUSED, "refusal"), cc("r1", local("2026-03-06T23:59:59", PARIS))],
        {(FR_REFUSAL, "r1")},
        id="decret-2022-1313-refusal-60-days-last-second-locked",
    ),
    pytest.param(
        [cc("f1", FR_REFUSED, "refusal"), cc("r1", local("2026-03-07T00:00:00", PARIS))],
        set(),
        id="decret-2022-1313-refusal-61st-day-midnight-free",
    ),
    pytest.param(
        [cc("f1", FR_REFUSED_WINTER, "refusal"), cc("r1", local("2026-04-11T23:59:59", PARIS))],
        {(FR_REFUSAL, "r1")},
        id="decret-2022-1313-refusal-60-days-across-dst-locked",
    ),
    pytest.param(
        [cc("f1", FR_REFUSED_WINTER, "refusal"), cc("r1", utc("2026-04-11T22:00:00"))],
        set(),
        id="decret-2022-1313-refusal-60-days-across-dst-cest-midnight-free",
    ),
    pytest.param(
        [cc("f1", FR_REFUSED, "refusal"), cc("r1", FR_REFUSED + SECOND, agent=True)],
        {(FR_REFUSAL, "r1")},
        id="decret-2022-1313-refusal-60-days-no-agent-exemption",
    ),
    pytest.param(
        [cc("f1", FR_REFUSED, "refusal"), cc("r1", FR_REFUSED)],
        set(),
        id="decret-2022-1313-refusal-same-instant-is-not-after",
    ),
    pytest.param(four(FR_D), set(), id="decret-2022-1313-fourth-call-in-30-days-free"),
    pytest.param(
        [*four(FR_D), cc("n5", local("2026-02-03T23:59:59", PARIS))],
        {(FR_FREQUENCY, "n5")},
        id="decret-2022-1313-fifth-call-in-30-days",
    ),
    pytest.param(
        [*four(FR_D), cc("n5", local("2026-02-04T00:00:00", PARIS))],
        set(),
        id="decret-2022-1313-fifth-call-on-31st-calendar-day-free",
    ),
    pytest.param(
        [*four(FR_D), cc("n5", FR_D[3] + SECOND), cc("n6", FR_D[3] + timedelta(days=3))],
        {(FR_FREQUENCY, "n5"), (FR_FREQUENCY, "n6")},
        id="decret-2022-1313-sixth-call-in-30-days-too",
    ),
    pytest.param(
        [*four(FR_D)[1:], cc("n5", FR_D[3] + timedelta(days=1)), four(FR_D)[0]],
        {(FR_FREQUENCY, "n5")},
        id="decret-2022-1313-earliest-call-arriving-last-flags-the-fifth",
    ),
    pytest.param(
        [*four(FR_D), cc("n5", FR_D[3])],
        {(FR_FREQUENCY, "n4"), (FR_FREQUENCY, "n5")},
        id="decret-2022-1313-simultaneous-fourth-and-fifth-both-count",
    ),
    pytest.param(
        [*four(FR_D, agent=True), cc("n5", FR_D[3] + SECOND, agent=True)],
        {(FR_FREQUENCY, "n5")},
        id="decret-2022-1313-agent-guaranteed-unanswered-attempts-count",
    ),
    pytest.param(
        [*four(FR_SPRING), cc("n5", local("2026-04-08T23:59:59", PARIS))],
        {(FR_FREQUENCY, "n5")},
        id="decret-2022-1313-30-calendar-days-across-dst-fifth-locked",
    ),
    pytest.param(
        [*four(FR_SPRING), cc("n5", utc("2026-04-08T22:00:00"))],
        set(),
        id="decret-2022-1313-30-calendar-days-across-dst-31st-day-free",
    ),
    pytest.param(
        [cc("f1", FR_REFUSED, "refusal"), *four(FR_D[1:] + [FR_D[3] + SECOND])],
        {(FR_FREQUENCY, "n4")} | {(FR_REFUSAL, f"n{i}") for i in (1, 2, 3, 4)},
        id="decret-2022-1313-refusal-and-frequency-together",
    ),
]


def _check_every_order(calls: list[CalleeCall], profile_name: str, expected: set[Pair]) -> None:
    rules, profile = RULES[profile_name], PROFILES[profile_name]
    assert brute_force(calls, profile) == expected
    orders = itertools.permutations(calls) if len(calls) <= 6 else [calls, calls[::-1]]
    for order in orders:
        history, found = feed(order, rules)
        counted = Counter((v.rule_id, v.call_id) for v in found)
        assert set(counted) == expected, [c.call_id for c in order]
        assert all(n == 1 for n in counted.values()), counted
        assert history == tuple(sorted(calls, key=lambda c: (c.originated_at, c.call_id)))


@pytest.mark.parametrize(("calls", "expected"), IT_CASES)
def test_it_silent_lockout(calls: list[CalleeCall], expected: set[Pair]) -> None:
    _check_every_order(calls, "it", expected)


@pytest.mark.parametrize(("calls", "expected"), UK_CASES)
def test_uk_lockouts(calls: list[CalleeCall], expected: set[Pair]) -> None:
    _check_every_order(calls, "uk", expected)


@pytest.mark.parametrize(("calls", "expected"), FR_CASES)
def test_fr_refusal_and_frequency(calls: list[CalleeCall], expected: set[Pair]) -> None:
    _check_every_order(calls, "fr", expected)


@pytest.mark.parametrize(
    ("profile_name", "rule_id", "triggered_at", "end"),
    [
        pytest.param(
            "it", IT_SILENT, IT_MONDAY, local("2026-03-07T10:00:00", ROME), id="garante-2014-mon"
        ),
        pytest.param(
            "it", IT_SILENT, IT_SPRING, utc("2026-03-31T09:00:00"), id="garante-2014-dst-spring"
        ),
        pytest.param(
            "it", IT_SILENT, IT_AUTUMN, utc("2026-10-27T08:00:00"), id="garante-2014-dst-autumn"
        ),
        pytest.param(
            "it", IT_NEXT, IT_MONDAY, local("2026-03-12T10:00:00", ROME), id="garante-2014-next"
        ),
        pytest.param(
            "uk",
            UK_ABANDONED,
            UK_BST_START,
            utc("2026-03-30T12:00:00"),
            id="ofcom-uk5-72-real-hours",
        ),
        pytest.param(
            "uk",
            UK_AMD,
            utc("2026-06-10T22:30:00"),
            utc("2026-06-10T23:00:00"),
            id="ofcom-uk6-london-midnight",
        ),
        pytest.param(
            "fr",
            FR_REFUSAL,
            FR_REFUSED_WINTER,
            utc("2026-04-11T22:00:00"),
            id="decret-2022-1313-refusal-60-days",
        ),
    ],
)
def test_lockout_end_is_the_first_free_instant(
    profile_name: str, rule_id: str, triggered_at: datetime, end: datetime
) -> None:
    profile = PROFILES[profile_name]
    rule = next(r for r in profile.lockouts if r.id == rule_id)
    assert lockout_end(rule, triggered_at, profile.home_zone) == end


# --- agent-guaranteed exemption, through callee_call ----------------------------------------


def record(call_id: str, at: datetime, dial_mode: str = "predictive", **kw: object) -> CallRecord:
    return CallRecord(
        call_id=call_id,
        campaign_id="k1",
        originated_at=at,
        ended_at=at + timedelta(seconds=30),
        callee_key="h1",
        tenant_id="t1",
        dial_mode=dial_mode,
        **kw,  # type: ignore[arg-type]
    )


def outcome(
    *, silent: bool = False, abandoned: bool = False, machine: bool = False, answered: bool = False
) -> CallOutcome:
    answered = answered or silent or abandoned or machine
    return CallOutcome(
        answered=answered,
        answered_by_person=answered and not machine,
        amd_machine=machine,
        silent=silent,
        abandoned=abandoned or silent,
        out_of_hours=False,
        short_ring=False,
    )


EXEMPTION_TRIGGERS = {
    "it": (outcome(silent=True), None, IT_MONDAY + timedelta(days=2)),
    "uk-abandoned": (outcome(abandoned=True), None, UK_T0 + timedelta(hours=10)),
    "uk-amd": (outcome(machine=True), None, UK_T0 + timedelta(hours=10)),
    "fr": (outcome(answered=True), True, FR_REFUSED + timedelta(days=10)),
}
TRIGGER_AT = {"it": IT_MONDAY, "uk-abandoned": UK_T0, "uk-amd": UK_T0, "fr": FR_REFUSED}


@pytest.mark.parametrize(
    ("case", "rule_id", "dial_mode", "locked"),
    [
        *(
            pytest.param(case, rule, mode, locked, id=f"{source}-{mode}-{verdict}")
            for case, rule, source, exempt in (
                ("it", IT_SILENT, "garante-2014-it-sc5", False),
                ("uk-abandoned", UK_ABANDONED, "ofcom-uk5", True),
                ("uk-amd", UK_AMD, "ofcom-uk6", True),
                ("fr", FR_REFUSAL, "decret-2022-1313-refusal", False),
            )
            for mode in ("progressive", "preview", "manual", "predictive", "agentless")
            for locked in [not exempt or mode in ("predictive", "agentless")]
            for verdict in ["locked" if locked else "agent-guaranteed-free"]
        )
    ],
)
def test_agent_guaranteed_exemption(case: str, rule_id: str, dial_mode: str, locked: bool) -> None:
    trigger_outcome, refusal, recall_at = EXEMPTION_TRIGGERS[case]
    rules = RULES[case[:2]]
    trigger = callee_call(record("t", TRIGGER_AT[case], refusal=refusal), trigger_outcome)
    recall = callee_call(record("r", recall_at, dial_mode), outcome())
    history, _ = record_call((), trigger, rules)
    _, found = record_call(history, recall, rules)
    assert ((rule_id, "r") in pairs(found)) is locked
    # the same verdict when the trigger arrives late
    history, _ = record_call((), recall, rules)
    _, found = record_call(history, trigger, rules)
    assert ((rule_id, "r") in pairs(found)) is locked


@pytest.mark.parametrize(
    ("dial_mode", "offset", "expected"),
    [
        pytest.param(
            mode,
            offset,
            {IT_NEXT} if mode in ("predictive", "agentless") and offset < TEN_DAYS else set(),
            id=f"garante-2014-it-sc5-first-call-{label}-{mode}",
        )
        for mode in ("progressive", "preview", "manual", "predictive", "agentless")
        for label, offset in (
            ("at-5d", FIVE_DAYS),
            ("at-7d", 7 * DAY),
            ("at-10d-minus-1s", TEN_DAYS - SECOND),
            ("at-10d", TEN_DAYS),
        )
    ],
)
def test_first_call_after_the_lockout_needs_an_agent(
    dial_mode: str, offset: timedelta, expected: set[str]
) -> None:
    """IT-SC-5 "al contatto successivo, deve essere garantita la presenza di un operatore":
    the first call after the 120 h lockout, in each dial mode, whichever arrives first."""
    rules = RULES["it"]
    trigger = callee_call(record("t", IT_MONDAY), outcome(silent=True))
    recall = callee_call(record("r", IT_MONDAY + offset, dial_mode), outcome())
    for order in ((trigger, recall), (recall, trigger)):
        _, found = feed(order, rules)
        assert {v.rule_id for v in found if v.call_id == "r"} == expected
        assert all(v.trigger_call_id == "t" for v in found)


# --- late triggers, duplicates --------------------------------------------------------------


def test_late_trigger_reports_the_calls_it_locks_with_itself_as_trigger() -> None:
    rules = RULES["it"]
    r1 = cc("r1", IT_MONDAY + timedelta(days=1), campaign="k2")
    r2 = cc("r2", IT_MONDAY + timedelta(days=4))
    r3 = cc("r3", IT_MONDAY + timedelta(days=4), agent=True)
    r4 = cc("r4", IT_MONDAY + timedelta(days=6))
    history, found = feed([r1, r2, r3, r4], rules)
    assert found == []
    history, found = record_call(history, cc("s1", IT_MONDAY, *S), rules)
    assert found == [
        LockoutViolation(IT_SILENT, "r1", "k2", r1.originated_at, "s1"),
        LockoutViolation(IT_SILENT, "r2", "k1", r2.originated_at, "s1"),
        LockoutViolation(IT_SILENT, "r3", "k1", r3.originated_at, "s1"),
        LockoutViolation(IT_NEXT, "r4", "k1", r4.originated_at, "s1"),
    ]
    assert [c.call_id for c in history] == ["s1", "r1", "r2", "r3", "r4"]


def test_second_late_trigger_does_not_report_calls_already_locked() -> None:
    rules = RULES["it"]
    history, found = feed(
        [cc("r1", IT_MONDAY + timedelta(days=2)), cc("s2", IT_MONDAY + timedelta(days=1), *S)],
        rules,
    )
    assert found == [LockoutViolation(IT_SILENT, "r1", "k1", IT_MONDAY + timedelta(days=2), "s2")]
    _, found = record_call(history, cc("s1", IT_MONDAY, *S), rules)
    assert pairs(found) == {(IT_SILENT, "s2")}  # r1 was already reported (trigger s2)


def test_new_call_names_the_latest_trigger_before_it() -> None:
    rules = RULES["uk"]
    calls = [cc("a1", UK_T0, "abandoned"), cc("a2", UK_T0 + timedelta(hours=5), "abandoned")]
    history, _ = feed(calls, rules)
    _, found = record_call(history, cc("r1", UK_T0 + timedelta(hours=6)), rules)
    assert [(v.rule_id, v.call_id, v.trigger_call_id) for v in found] == [
        (UK_ABANDONED, "r1", "a2")
    ]


@pytest.mark.parametrize(
    "duplicate",
    [
        pytest.param(cc("r1", IT_MONDAY + timedelta(days=1)), id="garante-2014-exact-repeat"),
        pytest.param(
            cc("r1", IT_MONDAY + timedelta(days=9), *S, campaign="k9"),
            id="garante-2014-same-call-id-other-content-first-wins",
        ),
    ],
)
def test_duplicate_call_id_changes_nothing(duplicate: CalleeCall) -> None:
    rules = RULES["it"]
    history, _ = feed([cc("s1", IT_MONDAY, *S), cc("r1", IT_MONDAY + timedelta(days=1))], rules)
    again, found = record_call(history, duplicate, rules)
    assert again is history
    assert found == []


def test_violation_carries_the_breaking_calls_campaign_and_instant() -> None:
    rules = RULES["fr"]
    calls = [*four(FR_D), cc("n5", FR_D[3] + SECOND, campaign="k5")]
    _, found = feed(calls, rules)
    assert found == [LockoutViolation(FR_FREQUENCY, "n5", "k5", FR_D[3] + SECOND, None)]


def test_naive_instant_is_refused() -> None:
    with pytest.raises(ValueError, match="no UTC offset"):
        record_call((), cc("x", datetime(2026, 1, 1, 10)), RULES["it"])


def test_unknown_trigger_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown lockout triggers"):
        record_call((), cc("x", IT_MONDAY, "busy"), RULES["it"])


# --- callee_call ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("the_outcome", "refusal", "triggers"),
    [
        pytest.param(outcome(), None, set(), id="unanswered-no-trigger"),
        pytest.param(outcome(silent=True), None, {"silent", "abandoned"}, id="silent-is-abandoned"),
        pytest.param(outcome(abandoned=True), False, {"abandoned"}, id="abandoned"),
        pytest.param(outcome(machine=True), None, {"amd_machine"}, id="amd-machine"),
        pytest.param(outcome(), True, {"refusal"}, id="decret-2022-1313-refusal-true"),
        pytest.param(outcome(), False, set(), id="decret-2022-1313-refusal-false"),
    ],
)
def test_callee_call_triggers(
    the_outcome: CallOutcome, refusal: bool | None, triggers: set[str]
) -> None:
    at = datetime.fromisoformat("2026-03-02T10:00:00+01:00")
    entry = callee_call(record("c1", at, "preview", refusal=refusal), the_outcome)
    assert entry == CalleeCall("c1", "k1", IT_MONDAY, True, frozenset(triggers))
    assert entry.originated_at.tzinfo is UTC


# --- order independence: random sets against the brute-force definition ---------------------


def random_calls(rng: random.Random, base: datetime, zone: str) -> list[CalleeCall]:
    """~20 calls over 40 days, many on rule boundaries: ties, ±1 s around 72 h, 120 h, 240 h
    and around local midnights, mixed triggers and dial modes."""
    tz = ZoneInfo(zone)
    calls: list[CalleeCall] = []
    for index in range(rng.randint(15, 22)):
        roll = rng.random()
        if calls and roll < 0.15:
            at = rng.choice(calls).originated_at
        elif calls and roll < 0.35:
            step = rng.choice(
                [timedelta(hours=h) for h in (72, 120, 240, 1, 0)]  # UK-5, IT-SC-5 5 + 5 days
            )
            at = (
                rng.choice(calls).originated_at + step + rng.choice([-SECOND, timedelta(0), SECOND])
            )
        elif roll < 0.55:
            day = base.astimezone(tz).date() + timedelta(days=rng.randrange(40))
            midnight = datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)
            at = midnight + rng.choice([-SECOND, timedelta(0), SECOND])
        else:
            at = base + timedelta(minutes=rng.randrange(40 * 24 * 60))
        kind = rng.random()
        triggers: set[str] = set()
        if kind < 0.2:
            triggers = {"silent", "abandoned"}
        elif kind < 0.35:
            triggers = {"abandoned"}
        elif kind < 0.5:
            triggers = {"amd_machine"}
        if rng.random() < 0.15:
            triggers.add("refusal")
        calls.append(
            cc(
                f"c{index:02d}",
                at,
                *triggers,
                agent=rng.random() < 0.3,
                campaign=rng.choice(["k1", "k2"]),
            )
        )
    return calls


RANDOM_CASES = [
    pytest.param(name, base, seed, id=f"{name}-{label}-seed{seed}")
    for name, source in (
        ("it", "garante-2014"),
        ("uk", "ofcom-uk5-uk6"),
        ("fr", "decret-2022-1313"),
    )
    for label, base in (
        (f"{source}-dst-spring", utc("2026-03-10T00:00:00")),
        (f"{source}-dst-autumn", utc("2026-10-05T00:00:00")),
    )
    for seed in range(10)
]


@pytest.mark.parametrize(("profile_name", "base", "seed"), RANDOM_CASES)
def test_every_arrival_order_reports_the_brute_force_set_once(
    profile_name: str, base: datetime, seed: int
) -> None:
    rng = random.Random(seed)
    profile, rules = PROFILES[profile_name], RULES[profile_name]
    calls = random_calls(rng, base, profile.home_zone)
    expected = brute_force(calls, profile)
    for _ in range(30):
        order = calls[:]
        rng.shuffle(order)
        _, found = feed(order, rules)
        counted = Counter((v.rule_id, v.call_id) for v in found)
        assert set(counted) == expected
        assert max(counted.values(), default=1) == 1


@pytest.mark.parametrize(("profile_name", "base", "seed"), RANDOM_CASES)
def test_pruned_history_loses_nothing_within_the_lateness_horizon(
    profile_name: str, base: datetime, seed: int
) -> None:
    """Arrivals at most 7 days late (SPEC lateness), pruned after every call as the
    detector does: the union is still the brute-force set."""
    rng = random.Random(seed)
    profile, rules = PROFILES[profile_name], RULES[profile_name]
    calls = random_calls(rng, base, profile.home_zone)
    expected = brute_force(calls, profile)
    for _ in range(10):
        delays = {c.call_id: timedelta(seconds=rng.randrange(7 * 86400)) for c in calls}
        order = sorted(calls, key=lambda c: c.originated_at + delays[c.call_id])
        history: tuple[CalleeCall, ...] = ()
        found: set[Pair] = set()
        newest = order[0].originated_at
        for call in order:
            history, new = record_call(history, call, rules)
            found |= pairs(new)
            newest = max(newest, call.originated_at)
            history = prune(history, newest, rules)
        assert found == expected


# --- prune ----------------------------------------------------------------------------------

NEWEST = utc("2026-06-01T12:00:00")


@pytest.mark.parametrize(
    ("profile_name", "horizon"),
    [
        pytest.param("it", timedelta(days=10 + 7 + 1), id="garante-2014-5-days-then-5-more"),
        pytest.param("uk", timedelta(hours=72, days=7 + 1), id="ofcom-uk5-72h-over-uk6-day"),
        pytest.param("fr", timedelta(days=61 + 7 + 1), id="decret-2022-1313-60-days-refusal"),
    ],
)
def test_prune_keeps_exactly_the_rules_horizon(profile_name: str, horizon: timedelta) -> None:
    rules = RULES[profile_name]
    assert rules.horizon() == horizon
    cutoff = NEWEST - horizon
    calls = [
        cc("old", cutoff - SECOND, *S),
        cc("edge", cutoff, *S),
        cc("recent", NEWEST - timedelta(days=1)),
        cc("newest", NEWEST),
    ]
    history, _ = feed(calls, rules)
    assert [c.call_id for c in prune(history, NEWEST, rules)] == ["edge", "recent", "newest"]


def test_prune_horizon_follows_the_lateness_setting() -> None:
    rules = RULES["uk"]
    history, _ = feed([cc("a", NEWEST - timedelta(days=6)), cc("b", NEWEST)], rules)
    assert len(prune(history, NEWEST, rules, lateness=timedelta(days=1))) == 1
    assert len(prune(history, NEWEST, rules)) == 2


def test_prune_caps_the_history_to_the_most_recent_64_calls() -> None:
    rules = RULES["fr"]
    calls = [cc(f"c{i:03d}", NEWEST - timedelta(hours=i)) for i in range(100)]
    history = tuple(sorted(calls, key=lambda c: c.originated_at))
    kept = prune(history, NEWEST, rules)
    assert MAX_CALLS_PER_CALLEE == 64
    assert kept == history[-64:]
    assert [c.call_id for c in kept][-1] == "c000"
    assert prune(history, NEWEST, rules, max_calls=10) == history[-10:]


def test_prune_without_callee_rules_keeps_nothing() -> None:
    rules = LockoutRules.of(load_profile("us"))
    history, _ = feed([cc("a", NEWEST)], rules)
    assert prune(history, NEWEST, rules) == ()


# --- compact JSON ---------------------------------------------------------------------------


def test_json_round_trip_is_compact_and_sorted() -> None:
    calls = (
        cc("c2", utc("2026-03-02T10:00:00.000001"), "silent", "abandoned", "refusal", agent=True),
        cc("c1", utc("2026-03-01T09:00:00"), "amd_machine", campaign="k2"),
        cc("c3", utc("2026-03-03T09:00:00")),
    )
    raw = to_json(calls)
    assert raw[0] == ["c2", "k1", 1772445600000001, 1, "sar"]
    assert raw[1] == ["c1", "k2", 1772355600000000, 0, "m"]
    assert raw[2][4] == ""
    back = from_json(raw)
    assert back == tuple(sorted(calls, key=lambda c: c.originated_at))
    assert all(c.originated_at.tzinfo is UTC for c in back)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param({"c1": 1}, id="not-a-list"),
        pytest.param([["c1", "k1", 1, 0]], id="short-row"),
        pytest.param([["c1", "k1", "1", 0, ""]], id="epoch-not-int"),
        pytest.param([["c1", "k1", True, 0, ""]], id="epoch-bool"),
        pytest.param([["c1", "k1", 1, 2, ""]], id="agent-not-0-1"),
        pytest.param([["c1", "k1", 1, 0, "x"]], id="unknown-trigger-letter"),
        pytest.param([[1, "k1", 1, 0, ""]], id="call-id-not-str"),
    ],
)
def test_from_json_refuses_malformed_rows(raw: object) -> None:
    with pytest.raises(ValueError, match="callee history"):
        from_json(raw)
