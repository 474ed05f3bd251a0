"""Per-call classification (SPEC "Classification", "Classification details"); pure.

For one CallRecord and its profile:

- `answered` = `answered_at` set.
- `amd_machine` = answered and `amd_result == "machine"` (an unanswered call is never counted
  as a machine, whatever AMD reported). `answered_by_person` = answered and not a machine:
  `human`, `notsure`, `hangup` and `none` (AMD not run, the default) all count as a person.
- `ref` = `greeting_ended_at` if present, else `answered_at` (conservative without VAD).
- `abandoned` = answered_by_person and (`agent_connected_at` absent, or
  `agent_connected_at − ref` > `profile.connect_limit_seconds`): 2.000 s is not abandoned,
  2.001 s is (16 CFR 310.4(b)(1)(iv); Ofcom UK-3; 2 s in every profile).
- `silent` = answered_by_person and `agent_connected_at` absent, whatever message or comfort
  noise played (Garante 20 Feb 2014 n. 83). Every silent call is also abandoned.
- `out_of_hours` = `originated_at` outside the profile's calling hours in every candidate zone
  (`calendar.is_within_calling_hours`; `callee_zones` empty: home zone; `callee_region` may
  select US state hours).
- `short_ring` = not answered, released by the system (`hangup_side` "system" or absent; not
  "callee" or "agent") and `ended_at − (ringing_at or originated_at)` < short_ring_min_seconds:
  14.999 s is short, 15.000 s is not (16 CFR 310.4(b)(4)(ii); Ofcom UK-4). Counted in every
  profile; alerting is a per-call rule of the profiles that have it.

Durations are exact: microsecond timedeltas compared as Fractions, never floats. Enumerations
(`amd_result`, `hangup_side`) are compared as ingest normalises them (lower case).

`violations`: ids of the profile's enabled `per_call_rules` whose check has a predicate in
`_PER_CALL_CHECKS`. That registry is empty for now (per-call rules are a later issue), so
`violations` is `()`; adding one is a function `(call, outcome, profile) -> bool` keyed by
its `PerCallRule.check` name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from fractions import Fraction

from .calendar import is_within_calling_hours
from .model import CallOutcome, CallRecord
from .profiles import Profile

_MICROSECOND = timedelta(microseconds=1)

PerCallCheck = Callable[[CallRecord, CallOutcome, Profile], bool]
_PER_CALL_CHECKS: dict[str, PerCallCheck] = {}
"""PerCallRule.check -> predicate; a rule with no predicate here is not evaluated yet."""


def elapsed_seconds(start: datetime, end: datetime) -> Fraction:
    """`end − start` in seconds, exact to the microsecond (negative if end is earlier)."""
    return Fraction((end - start) // _MICROSECOND, 1_000_000)


def classify(call: CallRecord, profile: Profile) -> CallOutcome:
    """What `call` counts as under `profile` (module docstring has every rule and edge)."""
    answered_at = call.answered_at
    answered = answered_at is not None
    amd_machine = answered and call.amd_result == "machine"
    by_person = answered and not amd_machine
    silent = by_person and call.agent_connected_at is None
    abandoned = silent
    agent_at = call.agent_connected_at
    if by_person and answered_at is not None and agent_at is not None:
        ref = call.greeting_ended_at or answered_at
        abandoned = elapsed_seconds(ref, agent_at) > profile.connect_limit_seconds
    short_ring = (
        not answered
        and call.hangup_side in (None, "system")
        and elapsed_seconds(call.ringing_at or call.originated_at, call.ended_at)
        < profile.short_ring_min_seconds
    )
    outcome = CallOutcome(
        answered=answered,
        answered_by_person=by_person,
        amd_machine=amd_machine,
        silent=silent,
        abandoned=abandoned,
        out_of_hours=not is_within_calling_hours(
            call.originated_at, call.callee_zones, profile, call.callee_region
        ),
        short_ring=short_ring,
    )
    violations = per_call_violations(call, outcome, profile)
    return replace(outcome, violations=violations) if violations else outcome


def per_call_violations(
    call: CallRecord, outcome: CallOutcome, profile: Profile
) -> tuple[str, ...]:
    """Ids of `profile`'s enabled per-call rules that `call` breaks (lockouts excluded:
    they need per-callee state)."""
    found: list[str] = []
    for rule in profile.per_call_rules:
        check = _PER_CALL_CHECKS.get(rule.check)
        if rule.enabled and check is not None and check(call, outcome, profile):
            found.append(rule.id)
    return tuple(found)
